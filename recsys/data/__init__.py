"""Datasets: the in-memory types, parsers of the public formats, a synthetic generator and
``load_dataset`` (see ``DATASET_NAMES``)."""

from recsys.data.dataset import Dataset, Interactions, Ratings
from recsys.data.errors import DatasetError, DatasetFormatError, DatasetIntegrityError, DatasetNotFoundError
from recsys.data.registry import DATASET_NAMES, cache_dir, load_dataset, resolve_data_dir
from recsys.data.synthetic import make_synthetic

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "DatasetError",
    "DatasetFormatError",
    "DatasetIntegrityError",
    "DatasetNotFoundError",
    "Interactions",
    "Ratings",
    "cache_dir",
    "load_dataset",
    "make_synthetic",
    "resolve_data_dir",
]
