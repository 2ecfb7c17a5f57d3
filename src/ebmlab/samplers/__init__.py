"""Samplers: unadjusted Langevin and MALA with cached energy/gradient (see samplers/base.py)."""
from ebmlab.samplers import langevin, mala
from ebmlab.samplers.base import ChainState, StepInfo, StepSizeController, init, run_chain

SAMPLERS = {"langevin": langevin, "mala": mala}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = ["ChainState", "StepInfo", "StepSizeController", "init", "run_chain", "langevin", "mala",
           "get_sampler", "SAMPLERS"]
