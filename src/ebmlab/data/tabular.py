"""Real tabular data that ships with scikit-learn, loaded as a user's ``--data`` array would be (issue 18).

``breast_cancer``: the Wisconsin diagnostic breast cancer set (Street, Wolberg & Mangasarian 1993;
``sklearn.datasets.load_breast_cancer``, bundled with scikit-learn: nothing is downloaded): 569 rows x 30
real-valued cell-nucleus features, 357 benign and 212 malignant. The model is trained on the benign rows
only (the in-distribution class); the malignant rows are its out-of-distribution set (``outliers``), the
usual one-class framing of this set. ``data/dataset.py`` passes the benign rows to ``array_dataset`` exactly
like a user's array: a held-out split of min(``data.n_test``, N // 10) rows drawn with ``data.seed``
(35 rows), and the standardiser fitted on the remaining training rows (322 rows).

``wine``: scikit-learn's wine recognition set (``load_wine``, bundled: 178 rows x 13 chemical measurements of
wines from three cultivars; UCI, Forina et al.). Trained on cultivar 1, the largest class (71 rows: 64 for
training, 7 held out); cultivars 0 and 2 (107 rows) are its out-of-distribution set. A second, smaller table,
added to check a choice made on breast cancer on data it was not made on (docs/data_defaults.md).
"""
from __future__ import annotations

import numpy as np
from torch import Tensor

from ebmlab.data.arrays import check_vectors

# name -> (scikit-learn loader name, the in-distribution label); the other labels are the OOD set
TABLES = {"breast_cancer": ("load_breast_cancer", 1),  # sklearn's target: 0 = malignant, 1 = benign
          "wine": ("load_wine", 1)}                     # cultivars 0, 1, 2: trained on 1 (the largest)


def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets  # here: importing ebmlab.data stays light

    loader, _ = TABLES[name]
    bunch = getattr(sklearn.datasets, loader)()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def inliers(name: str) -> Tensor:
    """(N, D) the in-distribution rows of table ``name``, in data coordinates (float32)."""
    x, y = _load(name)
    # float32 (as the bundled tables always trained): their values are small for their spread, float32 holds them
    return check_vectors(x[y == TABLES[name][1]], f"scikit-learn table {name!r}").float()


def outliers(name: str) -> Tensor:
    """(M, D) the rows of the other class(es): the table's out-of-distribution set, data coordinates."""
    x, y = _load(name)
    return check_vectors(x[y != TABLES[name][1]], f"scikit-learn table {name!r}").float()


__all__ = ["TABLES", "inliers", "outliers"]
