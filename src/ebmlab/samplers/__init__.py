"""Samplers: unadjusted Langevin and MALA with cached energy/gradient, the one chain loop
(``run_chain``, samplers/base.py) and one module per paper's generation procedure:
``annealed`` (000 Alg. 3-4), ``augmented`` (001 Alg. 2), ``implicit_sweep`` (002), ``recovery``
(003 Alg. 2 + Tweedie). Each procedure takes an energy, so it runs on exact energies as well
(tests/oracle/)."""
from ebmlab.samplers import langevin, mala
from ebmlab.samplers.base import ChainInfo, ChainState, StepInfo, StepSizeController, init, run_chain

SAMPLERS = {"langevin": langevin, "mala": mala}


def get_sampler(name: str):
    """The sampler module (``langevin`` or ``mala``) of a name; ValueError for an unknown one."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = ["ChainInfo", "ChainState", "StepInfo", "StepSizeController", "init", "run_chain", "langevin",
           "mala", "get_sampler", "SAMPLERS"]
