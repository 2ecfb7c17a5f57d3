"""Metrics as pure functions: densities, two-sample distances, OOD AUROC (images: fid.py and friends)."""
from ebmlab.metrics.density import grid_kl, make_grid, sample_precision
from ebmlab.metrics.distances import energy_distance, mmd
from ebmlab.metrics.ood import auroc

__all__ = ["grid_kl", "make_grid", "sample_precision", "energy_distance", "mmd", "auroc"]
