"""Paper 004 (Revisiting CD): MALA chains with an adaptive step (Sec. 4.2.5) on the exact mixture
energy E(x) = -log p(x), through ``ContrastiveDivergence.sample`` (objectives/contrastive.py).

Settings (fixed before looking at results): the paper's sampler (MALA, step adapted towards 0.574
acceptance from eps = 0.01, rate 0.05), chains from N(0, I) (``init_std`` 1). Chain length: the
chains must mix across the four modes, or their mode masses are those of the basins their noise
starts in (~0.25 each). Measured on this mixture, from exact samples, MALA forgets its starting mode
with a time constant of ~100 steps once the step is adapted (~300 steps from eps = 0.01; the
mode-occupation memory was 0.60 / 0.15 / 0.02 after 100 / 300 / 500 steps). L = 2000 steps is ~17
time constants: the chains on the mixture itself are at equilibrium, so MALA's exactness is what
is tested. The data start (``x0``) checks invariance: exact samples must stay exact.
"""
import torch

from ebmlab.objectives.contrastive import ContrastiveConfig, ContrastiveDivergence
from tests.oracle.checks import N_SAMPLES, assert_recovers

L_NOISE = 2000   # >> the ~100-step mode-switch time constant (module docstring)
L_DATA = 200     # from exact samples: long enough that many chains change mode (memory ~0.3)


def _objective(mixture):
    cfg = ContrastiveConfig(name="hybrid", sampler="mala", step_size=0.01, target_accept=0.574,
                            adapt_rate=0.05, init_std=1.0, noise_chain="short_run")
    return ContrastiveDivergence(mixture.energy(), cfg, shape=(2,))


def _accept(info) -> dict:
    acc = info.get("accept_rate")
    if acc is None or not len(acc):
        return {}
    return {"accept_rate_last_100_steps": round(float(acc[-100:].mean()), 3)}


def test_mala_from_noise_recovers_the_mixture(mixture, ref):
    out = _objective(mixture).sample(N_SAMPLES, generator=torch.Generator().manual_seed(40), n_steps=L_NOISE)
    assert_recovers(out.x, ref, "004 MALA from noise", _accept(out.info))


def test_mala_from_data_keeps_the_mixture(mixture, ref):
    x0 = mixture.sample(N_SAMPLES, torch.Generator().manual_seed(41))  # exact draws, independent of ref.data
    out = _objective(mixture).sample(N_SAMPLES, generator=torch.Generator().manual_seed(42), n_steps=L_DATA, x0=x0)
    assert_recovers(out.x, ref, "004 MALA from data", _accept(out.info))


L_AIS = 30   # the default demo's L: AIS must get the masses right where short-run MALA cannot (L << 100)


def _ais_objective(mixture):
    cfg = ContrastiveConfig(name="hybrid", sampler="mala", step_size=0.01, target_accept=0.574,
                            adapt_rate=0.05, init_std=1.0, noise_chain="ais")
    return ContrastiveDivergence(mixture.energy(), cfg, shape=(2,))


def test_ais_generation_recovers_the_mixture_in_few_stages(mixture, ref):
    """``noise_chain: ais`` (samplers/ais.py): L_AIS stages from N(0, I), then resampling by weight."""
    out = _ais_objective(mixture).sample(N_SAMPLES, generator=torch.Generator().manual_seed(43), n_steps=L_AIS)
    assert_recovers(out.x, ref, "004 AIS from noise", {"ess": round(float(out.info["ais_ess"][0]), 1),
                                                       **_accept(out.info)})


def test_short_run_mala_misses_the_masses_at_the_same_length(mixture, ref):
    """The control: plain MALA chains of the same length end in their start basins (the failure AIS fixes)."""
    out = _objective(mixture).sample(N_SAMPLES, generator=torch.Generator().manual_seed(43), n_steps=L_AIS)
    mass = mixture.mode_mass(out.x)
    assert float((mass - mixture.weights).abs().max()) > 0.05, f"short-run masses {mass.tolist()}"
