"""The ``method`` keys of paper 004's five contrastive-divergence schemes (Sec. 3) and the hybrid loss (Eq. 6)
(``objectives/contrastive.py``: the objective, whose docstring gives the paper's equations), with the checks that
refuse a value out of range and a key that cannot apply to the scheme, sampler or chains chosen (a key accepted and
ignored is a setting a researcher believes is in force).
"""
from __future__ import annotations

from dataclasses import dataclass

from ebmlab.config_checks import check_ranges
from ebmlab.errors import ConfigError

# noise_chain ais: resample when Kish's ESS falls below half the chains (samplers/ais.py, resample-move SMC;
# docs/leaderboard.md: in 30-D plain AIS kept 1-5 effective chains of 256)
AIS_RESAMPLE = 0.5

SCHEMES = ("data", "noise", "persistent", "persistent_refresh", "hybrid")


@dataclass
class ContrastiveConfig:
    """``method`` keys of paper 004's five CD schemes (see the field comments)."""
    name: str = "hybrid"
    lam: float = 5.0                  # hybrid: weight of the data-initialised term (Eq. 6; the paper: 25, which its
    #                                   configs set; 5 with AIS noise chains is the demo's, docs/paper004.md)
    sampler: str = "mala"             # langevin | mala
    n_steps: int = 30                 # Langevin steps from noise / bank (L)
    n_steps_data: int | None = 10     # steps of data-initialised chains (None: n_steps)
    step_size: float = 0.01           # eps
    temperature: float = 1.0          # T (App. A.4); noise std sqrt(2 eps T) unless noise_scale
    noise_scale: float | None = None  # noise std of the short-run moves (None: sqrt(2 eps T)); AIS chains keep
    #                                   sqrt(2 eps T), so with noise_chain ais it is the hybrid's data chains' only
    target_accept: float | None = 0.574  # mala, robbins_monro: adapt eps towards this acceptance (None: fixed eps)
    adapt_rate: float = 0.05
    adaptive_step: bool = False       # paper 004: eps = adaptive_c / ||E(x)|| (chains without a step-size controller)
    adaptive_c: float = 0.0005
    init_std: float = 1.0             # std of the N(0, sigma² I) chain initialisation
    train_init_std: float | None = None  # noise-initialised *training* chains (noise, hybrid) start at N(0, this²)
    #                                     (None: init_std); generation (``prior``, ``sample``, evaluation) and the
    #                                     persistent bank keep init_std
    buffer_size: int = 60000          # persistent bank size (paper 004: 60,000)
    refresh_prob: float = 0.05        # persistent_refresh: fraction of iterations that restart
    refresh_mode: str | None = None   # persistent_refresh: batch (None: Sec. 3, refresh_prob of the iterations restart
    #                                   the whole batch) | chain (Sec. 4.1: refresh_prob of the chains, every iteration)
    energy_l2: float = 0.01
    step_rule: str | None = None      # mala step rule: None = robbins_monro (to target_accept) | paper004
    proposal_cap: float | None = None  # paper004: max proposals per chain, a multiple of L (None: 5)
    ais_resample: float | None = None  # noise_chain ais: resample when the ESS < this fraction of the chains
    #   (a resample-move SMC sampler, samplers/ais.py); 0: never (plain AIS); None: resolved when the config
    #   is built, to AIS_RESAMPLE for ais chains (kept None otherwise)
    noise_chain: str | None = None    # noise-initialised chains: short_run (paper 004) | ais (importance-weighted,
    #   samplers/ais.py; not in paper 004: docs/paper004.md, the demo's ring masses) | None: resolved when the
    #   config is built (``resolved_noise_chain``): ais where it applies, else short_run

    def __post_init__(self):
        if self.noise_chain is None:  # written out resolved, so config.yaml and the run hash say what ran
            self.noise_chain = resolved_noise_chain(self)
        if self.ais_resample is None and self.noise_chain == "ais":  # (runs stored before: training/run.py)
            self.ais_resample = AIS_RESAMPLE

    def validate(self):
        """Raise ``ConfigError`` (one sentence) for an out-of-range key."""
        if self.sampler not in ("langevin", "mala"):
            raise ConfigError(f"method.sampler must be langevin or mala, got {self.sampler!r}")
        check_ranges("method", self, positive=("step_size", "temperature", "init_std", "adapt_rate", "adaptive_c",
                                               "buffer_size"), nonnegative=("lam", "energy_l2"), fraction=("refresh_prob",))
        if self.noise_scale is not None and self.noise_scale <= 0:
            raise ConfigError(f"method.noise_scale must be positive, got {self.noise_scale}")
        if self.train_init_std is not None and not self.train_init_std > 0:
            raise ConfigError(f"method.train_init_std must be positive, got {self.train_init_std}")
        if self.n_steps < 1 or (self.n_steps_data is not None and self.n_steps_data < 1):
            raise ConfigError("method.n_steps and method.n_steps_data must be at least 1")
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise ConfigError(f"method.target_accept must lie in (0, 1), got {self.target_accept}")
        if self.step_rule not in (None, "robbins_monro", "paper004"):
            raise ConfigError(f"method.step_rule must be robbins_monro or paper004, got {self.step_rule!r}")
        if self.step_rule == "paper004" and self.sampler != "mala":
            raise ConfigError("method.step_rule paper004 is a Metropolis rule: it needs method.sampler mala")
        if self.ais_resample is not None and not 0.0 <= self.ais_resample <= 1.0:
            raise ConfigError(f"method.ais_resample must lie in [0, 1] (a fraction of the chains; 0: never resample), "
                              f"got {self.ais_resample}")
        if self.noise_chain not in ("short_run", "ais"):
            raise ConfigError(f"method.noise_chain must be short_run or ais, got {self.noise_chain!r}")
        if self.noise_chain == "ais" and (self.name not in ("noise", "hybrid") or self.sampler != "mala"
                                          or self.step_rule == "paper004" or self.target_accept is None):
            raise ConfigError("method.noise_chain ais needs method.name noise or hybrid, method.sampler mala and "
                              "an adapted step (method.target_accept set, the robbins_monro step rule)")
        if self.ais_resample is not None and self.noise_chain != "ais":
            raise ConfigError("method.ais_resample applies only with method.noise_chain ais")
        if self.refresh_mode not in (None, "batch", "chain"):
            raise ConfigError(f"method.refresh_mode must be batch or chain, got {self.refresh_mode!r}")
        if self.proposal_cap is not None and self.step_rule != "paper004":
            raise ConfigError("method.proposal_cap applies only with method.step_rule paper004")
        if self.proposal_cap is not None and not self.proposal_cap >= 1:
            raise ConfigError(f"method.proposal_cap must be at least 1 (a multiple of L), got {self.proposal_cap}")


    def inert_keys(self) -> list[str]:
        """Sentences for keys set where they would do nothing with the scheme, sampler and chains chosen (they were
        accepted and ignored: docs/testing.md, "Is every method setting live?"). A new run is refused on the first
        (``config_checks.check_new_run``); a stored run still opens and resumes as it ran."""
        said = []
        if self.adaptive_step and self.sampler == "mala" and (self.target_accept is not None
                                                               or self.step_rule == "paper004"):
            said.append("method.adaptive_step (eps = adaptive_c / ||E(x)||) sets the step of chains without a "
                        "step-size controller; with method.sampler mala and method.target_accept set the controller "
                        "sets it, so it would do nothing: set method.target_accept=null or method.sampler=langevin, "
                        "or method.adaptive_step=false")
        if self.noise_scale is not None and self.noise_chain == "ais" and self.name == "noise":
            said.append("method.noise_scale applies to short-run chains; the noise scheme's chains are AIS chains "
                        "(method.noise_chain ais), whose moves keep sqrt(2 eps T): set method.noise_chain=short_run, "
                        "or leave method.noise_scale unset")
        if self.train_init_std is not None and self.name in ("data", "persistent", "persistent_refresh"):
            start = "data" if self.name == "data" else "its bank, filled and refreshed from N(0, init_std²)"
            said.append(f"method.train_init_std applies to the noise-initialised training chains of the noise and "
                        f"hybrid schemes; {self.name}'s chains start from {start}: leave it unset")
        return said

def resolved_noise_chain(cfg: ContrastiveConfig) -> str:
    """``noise_chain: null``: "ais" where importance-weighted chains apply (the noise and hybrid schemes,
    MALA with an adapted step, the Robbins-Monro rule), else "short_run" (every paper-004 config: their
    Langevin chains keep the paper's short-run scheme)."""
    applies = (cfg.name in ("noise", "hybrid") and cfg.sampler == "mala" and cfg.target_accept is not None
               and cfg.step_rule in (None, "robbins_monro"))
    return "ais" if applies else "short_run"
