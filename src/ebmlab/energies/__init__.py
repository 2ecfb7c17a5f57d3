"""Energies: modules mapping a batch (B, ...) to energies (B,). See energies/base.py."""
from ebmlab.energies.base import Energy, energy_and_grad
from ebmlab.energies.mixture_base import GaussianMixtureBase
from ebmlab.energies.mlp import MLPEnergy

__all__ = ["Energy", "GaussianMixtureBase", "MLPEnergy", "energy_and_grad"]
