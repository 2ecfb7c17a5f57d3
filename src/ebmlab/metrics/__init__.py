"""Metrics as pure functions: densities, two-sample distances, OOD AUROC, toy structure (mode masses,
in-support share); images: fid.py and friends."""
from ebmlab.metrics.density import grid_kl, make_grid, sample_precision
from ebmlab.metrics.distances import energy_distance, mmd
from ebmlab.metrics.ood import auroc
from ebmlab.metrics.structure import grid_mode_masses, in_support_share, mode_mass_error, mode_masses

__all__ = ["auroc", "energy_distance", "grid_kl", "grid_mode_masses", "in_support_share", "make_grid", "mmd",
           "mode_mass_error", "mode_masses", "sample_precision"]
