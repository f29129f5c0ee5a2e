"""The checkpoint of a run: one consistent unit of the server's state and every shard's state of one epoch.

Layout under the run folder::

    checkpoints/epoch-N/shard-K.pt   each shard's user embeddings at epoch N, with N and its first client id
    checkpoint.pt                    the server's state at epoch N and the shard ranges; written last

The shards write their files first; the server's atomic replace of ``checkpoint.pt`` commits epoch N, and only
then are other epochs' folders removed. A run killed at any point therefore resumes from the last committed
epoch, whose server and shard files belong together; every file carries its epoch and is checked on resume.
Shard files are contiguous client ranges, so a resume may use another shard count (they are concatenated and
re-split).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from federation.config import ConfigError
from recsys.atomic import atomic_torch_save

CHECKPOINT = "checkpoint.pt"
FOLDER = "checkpoints"


class CheckpointError(ConfigError):
    """A checkpoint is missing, incomplete or from another epoch; the message names the file."""


def epoch_dir(out: str | Path, epoch: int) -> Path:
    return Path(out) / FOLDER / f"epoch-{epoch}"


def shard_file(out: str | Path, epoch: int, shard: int) -> Path:
    return epoch_dir(out, epoch) / f"shard-{shard}.pt"


def save_shard(out: str | Path, epoch: int, shard: int, first_client: int, embeddings: torch.Tensor) -> None:
    """Write one shard's state of ``epoch`` (uncommitted until the server writes ``checkpoint.pt``)."""
    atomic_torch_save({"epoch": epoch, "first": first_client, "embeddings": embeddings.cpu()},
                      shard_file(out, epoch, shard))


def _load_shard(out: str | Path, epoch: int, shard: int, first: int, count: int) -> torch.Tensor:
    path = shard_file(out, epoch, shard)
    if not path.is_file():
        raise CheckpointError(f"checkpoint of epoch {epoch} is incomplete: {path} is missing")
    saved = torch.load(path, weights_only=True)
    if int(saved["epoch"]) != epoch or int(saved["first"]) != first or len(saved["embeddings"]) != count:
        raise CheckpointError(f"{path} holds epoch {int(saved['epoch'])}, clients from {int(saved['first'])} "
                              f"({len(saved['embeddings'])}); the checkpoint expects epoch {epoch}, clients "
                              f"{first}..{first + count - 1}")
    return saved["embeddings"]


def check_shards(out: str | Path, epoch: int, starts: list[int]) -> None:
    """Raise ``CheckpointError`` unless every shard file of the committed ``epoch`` is present and matches."""
    for shard in range(len(starts) - 1):
        _load_shard(out, epoch, shard, starts[shard], starts[shard + 1] - starts[shard])


def load_embeddings(out: str | Path, epoch: int, starts: list[int], first: int, count: int) -> np.ndarray:
    """The embeddings of clients ``first .. first + count - 1`` from the checkpoint of ``epoch`` saved by shards
    with client ranges ``starts`` (any shard count: the overlapping ranges are concatenated and cut)."""
    parts = []
    for shard in range(len(starts) - 1):
        lo, hi = max(first, starts[shard]), min(first + count, starts[shard + 1])
        if lo < hi:
            saved = _load_shard(out, epoch, shard, starts[shard], starts[shard + 1] - starts[shard])
            parts.append(saved[lo - starts[shard] : hi - starts[shard]])
    if sum(len(p) for p in parts) != count:
        raise CheckpointError(f"the checkpoint of epoch {epoch} covers clients 0..{starts[-1] - 1}, "
                              f"not {first}..{first + count - 1}")
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)


def remove_other_epochs(out: str | Path, keep: int | None) -> None:
    """Delete every epoch folder but ``keep`` (uncommitted or superseded ones), and pre-epoch-folder shard files."""
    root = Path(out) / FOLDER
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith("epoch-") and path.name != f"epoch-{keep}":
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.name.startswith("shard-"):
            path.unlink(missing_ok=True)


def committed_embeddings(out: str | Path) -> torch.Tensor:
    """Every client's user embeddings, in client-id order, from the run's committed checkpoint (for analysis)."""
    saved = torch.load(Path(out) / CHECKPOINT, weights_only=False)
    starts = list(saved["shard_starts"])
    return torch.from_numpy(load_embeddings(out, int(saved["epoch"]), starts, 0, starts[-1]))
