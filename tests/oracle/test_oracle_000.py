"""Paper 000 (time as a random variable): Alg. 3 (simulated annealing) and Alg. 4 (soft annealing)
through ``JointTime.sample`` (samplers/annealed.py) with the exact joint log p(z, t) of the linear
series z = alpha_t x + beta_t n, n ~ N(0, sigma_n^2 I), alpha_t = t / (T-1), p_t uniform
(exact.SeriesEnergy, the interface of energies/time.JointTimeEnergy).

Settings: configs/paper000_spiral_*.yaml: T = 256, sigma_n = 0.3, Alg. 3 on 128 evenly spaced levels,
Alg. 4 with 128 stages, 3 MALA steps per level / stage, target acceptance 0.6; a fresh objective
(the exact energy has nothing to train; whatever the generation needs it must set up itself). The
target is the oracle mixture scaled by 0.2 (exact.ExactMixture.affine): the spiral config keeps the
paper's coordinates, where the data's std (~0.2) is a little under the reference's 0.3 (App. C.1).
Both tests start from the reference N(0, sigma_n^2 I). The acceptance over the last 10 % of stages is
reported with the numbers (issue 12: ~0.02-0.03 when the steps are not fitted to each level).
"""
import math

import pytest
import torch

from ebmlab.objectives.joint_time import JointTime, JointTimeConfig
from tests.oracle.checks import N_SAMPLES, assert_recovers, reference
from tests.oracle.exact import SeriesEnergy

T, SIGMA_N = 256, 0.3


@pytest.fixture(scope="module")
def spiral_scale(mixture):
    mix = mixture.affine(0.2)
    return mix, reference(mix)


def _last10(info) -> dict:
    if "accept_rate_last10" in info:
        return {"accept_rate_last10": round(float(info["accept_rate_last10"]), 3)}
    if "stage_accept_rate" in info:
        acc = info["stage_accept_rate"]
        return {"accept_rate_last10": round(float(acc[-math.ceil(0.1 * len(acc)):].mean()), 3)}
    return {}


def _sample(mix, algorithm: str, seed: int):
    cfg = JointTimeConfig(name="cd_ce", T=T, sigma_n=SIGMA_N, target_accept=0.6, sample_method=algorithm,
                          sample_levels=128, sample_steps=3, soft_stages=128)
    obj = JointTime(SeriesEnergy(mix, T, SIGMA_N), cfg, shape=(2,))
    return obj.sample(N_SAMPLES, generator=torch.Generator().manual_seed(seed))


def test_alg3_simulated_annealing_recovers_the_mixture(spiral_scale):
    mix, ref = spiral_scale
    out = _sample(mix, "annealing", seed=0)
    assert_recovers(out.x, ref, "000 Alg. 3", _last10(out.info))


def test_alg4_soft_annealing_recovers_the_mixture(spiral_scale):
    mix, ref = spiral_scale
    out = _sample(mix, "soft", seed=1)
    assert_recovers(out.x, ref, "000 Alg. 4", _last10(out.info))
