"""Paper 001 (Improved CD): Alg. 2 (``ImprovedCD.sample``, samplers/augmented.py) on the exact
mixture energy E(x) = -log p(x), from uniform noise over the vector box of objectives/improved_cd.py
(data range +- 10 %), without augmentation (vector data) or multi-scale energy.

Settings (fixed before looking at results): noise_scale sigma = sqrt(2 lambda), so each step is a
textbook unadjusted Langevin step on exp(-E) (the paper's lambda = 500 / sigma = 0.001 is a
temperature choice for learned energies, not a sampler of exp(-E)). Unadjusted Langevin is biased
by O(lambda): with lambda = 0.005 the stationary variance of the narrowest mode (std 0.30) is
inflated by lambda / (2 s^2) ~ 3 %. Chain length: measured on this mixture from exact samples, this
chain forgets its starting mode with a time constant of ~780 steps (mode-occupation memory 0.26 /
0.07 after 1000 / 2000 steps); 200 rounds of 20 steps = 4000 steps is ~5 time constants, so the
uniform start's mode-mass error (~0.15) decays to ~0.001.
"""
import torch

from ebmlab.objectives.improved_cd import ImprovedCD, ImprovedCDConfig
from tests.oracle.checks import N_SAMPLES, assert_recovers

STEP = 0.005


def test_alg2_from_uniform_noise_recovers_the_mixture(mixture, ref):
    cfg = ImprovedCDConfig(augment=False, multiscale=False, step_size=STEP, noise_scale=(2 * STEP) ** 0.5,
                           sample_rounds=200, sample_steps=20)
    lo, hi = ref.data.min(0).values, ref.data.max(0).values  # the vector box of improved_cd._init_box
    pad = 0.1 * (hi - lo)
    obj = ImprovedCD(mixture.energy(), cfg, shape=(2,), kind="vector", low=lo - pad, high=hi + pad)
    out = obj.sample(N_SAMPLES, generator=torch.Generator().manual_seed(10))
    assert_recovers(out.x, ref, "001 Alg. 2 (Langevin, uniform start)")
