"""The one recovery check every oracle test applies (issue 12, item 3): each procedure draws
R x n = 4 x 2000 samples, compared with n = 2000 data points drawn with fixed seeds.

1. ``sample_precision`` (metrics/density.py: the fraction of samples whose exact log-density is at
   or above the 1 % quantile of the data's) >= 0.93; exact samples score ~0.99 (the data's own
   precision, reported beside it).
2. ``energy_distance(samples, data)``, averaged over the R sets of n samples, <= 2 x the
   data-vs-data floor at the same n. The floor is the
   *expected* energy distance between the data and an independent draw data2 of n exact points,
   computed exactly (``expected_floor``; the V-statistic's expectation given the data needs only
   E_X |X - d_j| and E |X - X'|, both Rice means for a 2-D Gaussian mixture). A single draw is no
   floor: the distance of n = 2000 exact points to the data is heavy-tailed (for this mixture
   0.0006-0.0030 between seeds, 5-95 %), so one draw's value would make the check lenient or
   impossible by the luck of its seed (``ed_floor_single``, one draw, is reported beside it). With
   the expected floor (0.00137 here), the check sees a 0.03 shift of weight between modes, means 5 %
   too close or stds 20 % too wide (measured ED 0.0026-0.0031), which precision and mode mass do
   not. Its price for ONE set of n samples: exact samples exceed the limit at ~7 % of seeds (measured
   over 300 seeds; the ratio's distribution does not depend on n, so a larger n does not help). With
   nine procedures that is a coin flip per suite, and it did flip once (paper 004 from noise: 2.09
   at its pre-set seed, while over 36 other seeds its ratios matched exact samples'). So the check
   averages the distance over R = 4 independent sets of n samples (``REPLICATES``), which shrinks
   the spread by 2 and the false-alarm rate of exact samples to well under 1 %, at the same floor and
   factor. (This design was adopted after that failure, for all procedures at once, with the seeds
   unchanged.)
3. per-mode mass (each sample assigned to the component of highest responsibility) within +-0.05
   of the true weights; exact samples: max error ~0.013 at n = 2000 (mean over seeds).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ebmlab.metrics.density import sample_precision
from ebmlab.metrics.distances import energy_distance

N = 2000                       # data points, and samples per replicate set
REPLICATES = 4                 # independent sets of N samples whose energy distances are averaged
N_SAMPLES = N * REPLICATES     # samples each procedure draws
DATA_SEED = 1                  # the held-out data every sample set is compared with
DATA2_SEED = 2                 # an independent draw: the data's own precision, mode mass, one-draw ED
PRECISION_MIN = 0.93
ED_FACTOR = 2.0
MASS_TOL = 0.05


@dataclass
class Reference:
    """Held-out data of a mixture and the data-vs-data numbers the samples are compared with."""
    mix: object
    data: Tensor               # (N, D)
    data_logp: Tensor          # (N,)
    floor: float               # expected ED(data2, data) over draws data2 of N points
    floor_single: float        # ED(data2, data) for one draw (reported)
    data_precision: float      # precision of data2 (what exact samples score)
    data_mass_err: float       # its max per-mode mass error


_CACHE: dict[tuple, Reference] = {}


def _key(mix) -> tuple:
    return tuple(tuple(t.flatten().tolist()) for t in (mix.weights, mix.means, mix.stds))


def expected_floor(mix, data: Tensor) -> float:
    """E[energy_distance(data2, data)] over draws data2 of n = len(data) exact points:
    2 mean_j E|X - d_j| - (1 - 1/n) E|X - X'| - mean_ij |d_i - d_j| (the V-statistic of
    metrics/distances.py keeps the zero diagonal, hence 1 - 1/n)."""
    n = data.shape[0]
    cross = float(mix.expected_distance_to(data).mean())
    within_data = float(torch.cdist(data.double(), data.double()).mean())
    return 2 * cross - (1 - 1 / n) * mix.expected_pair_distance() - within_data


def reference(mix) -> Reference:
    """The Reference of ``mix`` (cached per mixture parameters)."""
    key = _key(mix)
    if key not in _CACHE:
        data = mix.sample(N, torch.Generator().manual_seed(DATA_SEED))
        data2 = mix.sample(N, torch.Generator().manual_seed(DATA2_SEED))
        data_logp = mix.log_prob(data)
        _CACHE[key] = Reference(
            mix, data, data_logp, floor=expected_floor(mix, data), floor_single=energy_distance(data2, data),
            data_precision=sample_precision(mix.log_prob(data2), data_logp),
            data_mass_err=float((mix.mode_mass(data2) - mix.weights).abs().max()))
    return _CACHE[key]


def measure(samples: Tensor, ref: Reference) -> dict:
    """The three numbers of the check (and what the data itself scores)."""
    mix = ref.mix
    samples = samples.detach().float().cpu()
    mass = mix.mode_mass(samples)
    eds = [energy_distance(part, ref.data) for part in samples.split(N)]  # R sets of N
    return {"precision": sample_precision(mix.log_prob(samples), ref.data_logp),
            "data_precision": ref.data_precision,
            "ed": sum(eds) / len(eds), "ed_sets": [round(e, 5) for e in eds], "ed_floor": ref.floor,
            "ed_floor_single": ref.floor_single,
            "mode_mass": [round(float(m), 4) for m in mass],
            "mass_err": float((mass - mix.weights).abs().max()), "data_mass_err": ref.data_mass_err}


def format_report(label: str, m: dict, extra: dict | None = None) -> str:
    text = (f"[oracle {label}] precision {m['precision']:.4f} (data {m['data_precision']:.4f}, "
            f"min {PRECISION_MIN}); ED {m['ed']:.3g} vs floor {m['ed_floor']:.3g} "
            f"(ratio {m['ed'] / m['ed_floor']:.2f}, max {ED_FACTOR}; sets {m['ed_sets']}; "
            f"single-draw floor {m['ed_floor_single']:.3g}); mode mass {m['mode_mass']} "
            f"(max err {m['mass_err']:.4f}, data {m['data_mass_err']:.4f}, max {MASS_TOL})")
    if extra:
        text += "; " + ", ".join(f"{k} {v}" for k, v in extra.items())
    return text


def assert_recovers(samples: Tensor, ref: Reference, label: str, extra: dict | None = None) -> dict:
    """Assert the three recovery criteria; the message carries every measured number."""
    if samples.shape != (N_SAMPLES, *ref.data.shape[1:]):
        raise AssertionError(f"[oracle {label}] samples have shape {tuple(samples.shape)}, "
                             f"expected {(N_SAMPLES, *ref.data.shape[1:])}")
    if not bool(torch.isfinite(samples).all()):
        raise AssertionError(f"[oracle {label}] non-finite samples")
    m = measure(samples, ref)
    text = format_report(label, m, extra)
    print(text)
    failed = [name for name, bad in (("precision", m["precision"] < PRECISION_MIN),
                                     ("energy distance", m["ed"] > ED_FACTOR * m["ed_floor"]),
                                     ("mode mass", m["mass_err"] > MASS_TOL)) if bad]
    assert not failed, f"{', '.join(failed)} failed: {text}"
    return m
