"""Dataset names, where their files live, and ``load_dataset``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.data.convert import TEST_FRACTION, lists_to_dataset, ratings_to_dataset
from recsys.data.dataset import Dataset, Ratings
from recsys.data.download import extract_member, fetch, verify_content
from recsys.data.errors import DatasetNotFoundError
from recsys.data.files import locate
from recsys.data.formats import read_filmtrust, read_movielens_1m, read_movielens_100k, read_user_lists
from recsys.data.synthetic import make_synthetic

DATA_DIR_ENV = "FEDREC_DATA_DIR"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fedrec-sim/datasets`` (default ``~/.cache/fedrec-sim/datasets``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedrec-sim" / "datasets"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The dataset root: ``data_dir`` if given, else ``$FEDREC_DATA_DIR``, else ``cache_dir()``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if from_env := os.environ.get(DATA_DIR_ENV):
        return Path(from_env).expanduser()
    return cache_dir()


@dataclass(frozen=True)
class Archive:
    """A public zip holding a dataset file, and the file's known checksums."""

    url: str
    member: str  # path of the file inside the zip
    sha256: str | None = None
    git_blob: str | None = None

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class SyntheticSpec:
    """Generated data; options go to ``make_synthetic``."""

    def load(self, name: str, root: Path, download: bool, **options: Any) -> Dataset:
        return make_synthetic(**options)


@dataclass(frozen=True)
class SplitSpec:
    """Per-user ``user item item ...`` train and test files (plain or .gz) in one folder."""

    folder: str
    train: str
    test: str
    source: str  # where to get the files, for error messages

    def load(self, name: str, root: Path, download: bool) -> Dataset:
        paths = [root / self.folder / file for file in (self.train, self.test)]
        if missing := [path for path in paths if locate(path) is None]:
            listed = ", ".join(f"{path} (or {path.name}.gz)" for path in missing)
            raise DatasetNotFoundError(
                f"dataset {name!r}: missing {listed}. Put the folder {self.folder}/ ({self.source}) under {root}, "
                f"or point data_dir / ${DATA_DIR_ENV} at a folder that has it."
            )
        return lists_to_dataset(name, read_user_lists(paths[0]), read_user_lists(paths[1]))


@dataclass(frozen=True)
class RatingsSpec:
    """One explicit-ratings file (plain or .gz), downloaded when its origin is an ``Archive``."""

    path: str  # relative to the root (and to the cache folder for downloads)
    reader: Callable[[Path], Ratings]
    origin: Archive | str  # a download, or where to get the file by hand
    min_user_ratings: int = 0
    partial: str | None = None  # a partial copy that may sit beside it, never used

    def load(
        self,
        name: str,
        root: Path,
        download: bool,
        *,
        min_user_ratings: int | None = None,
        test_fraction: float = TEST_FRACTION,
    ) -> Dataset:
        minimum = self.min_user_ratings if min_user_ratings is None else min_user_ratings
        raw = self.reader(self._file(name, root, download))
        return ratings_to_dataset(name, raw, min_user_ratings=minimum, test_fraction=test_fraction)

    def _file(self, name: str, root: Path, download: bool) -> Path:
        """The verified file: from the root, else the cache folder, else downloaded there."""
        wanted = root / self.path
        cached = cache_dir() / self.path
        archive = self.origin if isinstance(self.origin, Archive) else None
        found = locate(wanted) or locate(cached)
        if found is not None:
            if archive is not None:
                verify_content(found, sha256=archive.sha256, git_blob=archive.git_blob)
            return found
        problem = f"dataset {name!r}: {wanted} (or {wanted.name}.gz) does not exist."
        if self.partial and (partial := wanted.parent / self.partial).exists():
            problem += f" {partial} exists but holds only part of the ratings, so it is not used."
        if archive is None:
            raise DatasetNotFoundError(f"{problem} Get {wanted.name} from {self.origin} and put it there.")
        zipped = cache_dir() / archive.file_name
        extract = f"extract {archive.member} from it to {wanted}"
        if not download:
            raise DatasetNotFoundError(f"{problem} Downloading is off: save {archive.url} as {zipped}, or {extract}.")
        try:
            # The zip's own checksum is not known for certain, so only the extracted file is verified.
            fetch(archive.url, zipped)
        except DatasetNotFoundError as err:
            raise DatasetNotFoundError(f"{problem} {err}; or {extract}.") from err
        return extract_member(zipped, archive.member, cached, sha256=archive.sha256, git_blob=archive.git_blob)


_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_FEDERATED_SPLIT = "the PoisonFedDLRS split, github.com/rdz98/PoisonFedDLRS"

DATASETS: dict[str, SyntheticSpec | SplitSpec | RatingsSpec] = {
    "synthetic": SyntheticSpec(),
    "fed-ml": SplitSpec("fed-ml-split", "train.dat", "test.dat", f"{_FEDERATED_SPLIT} Data/ML/"),
    "fed-az": SplitSpec("az-digital-music", "train.dat", "test.dat", f"{_FEDERATED_SPLIT} Data/AZ/"),
    "ml-100k": RatingsSpec(
        "ml-100k/u.data",
        read_movielens_100k,
        Archive(
            f"{_GROUPLENS}/ml-100k.zip",
            "ml-100k/u.data",
            sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        ),
    ),
    "ml-1m": RatingsSpec(
        "ml-1m/ratings.dat",
        read_movielens_1m,
        Archive(
            f"{_GROUPLENS}/ml-1m.zip",
            "ml-1m/ratings.dat",
            git_blob="77a7c4b150f588c23bb9e1f068aa996c0b413695",  # 1,000,209 lines
        ),
        partial="ratings.partial-users1-2999.dat.gz",
    ),
    "filmtrust": RatingsSpec(
        "filmtrust/ratings.txt",
        read_filmtrust,
        "LibRec (librec.net) or github.com/greensun0830/TCD Data/ratings.txt",
        min_user_ratings=15,
    ),
    "steam": SplitSpec(
        "steam", "train.txt", "test.txt", "the FedRecAttack split, github.com/rdz98/FedRecAttack Data/steam/"
    ),
    "gowalla": SplitSpec(
        "gowalla", "train.txt", "test.txt", "the LightGCN split, github.com/gusye1234/LightGCN-PyTorch data/gowalla/"
    ),
    "amazon-book": SplitSpec(
        "amazon-book",
        "train.txt",
        "test.txt",
        "the LightGCN split, github.com/gusye1234/LightGCN-PyTorch data/amazon-book/",
    ),
}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = True, **options: Any) -> Dataset:
    """Load dataset ``name`` from the root folder ``resolve_data_dir(data_dir)``.

    ``options`` go to the loader (``make_synthetic``'s arguments for ``synthetic``;
    ``min_user_ratings`` and ``test_fraction`` for the explicit-rating datasets).
    MovieLens files missing locally are downloaded into ``cache_dir()`` unless ``download``
    is False.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return DATASETS[name].load(name, resolve_data_dir(data_dir), download, **options)
