"""Data: toy distributions with exact densities, user arrays, images (see dataset.py for coordinates)."""
from ebmlab.data.dataset import DATASETS, Affine, Dataset, build_dataset
from ebmlab.data.toy import TOYS, get_toy
from ebmlab.errors import DataError

__all__ = ["DataError", "DATASETS", "Affine", "Dataset", "build_dataset", "TOYS", "get_toy"]
