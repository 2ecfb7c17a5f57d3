"""Run hashes, the keys a resumed run may change, and what older stored runs ran with.

A checkpoint's sidecar stores ``run_hash`` of its run's config: every key but ``MUTABLE_KEYS`` (how long the
run trains, how often it logs, checkpoints and samples, ``eval.*``: what ``ebmlab train --resume --set`` may
change). Keys added after runs existed are left out of the hashes at the value older runs had (``_NEW_KEYS``
at None, ``_NEW_KEY_DEFAULTS`` at their default), so those runs' checkpoints still match their
``config.yaml``; ``stored_run_defaults`` fills in what a stored run ran with where a key's resolved default
changed since. Everything here works on config mappings (``Config.to_dict()``, a stored ``config.yaml``).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["MUTABLE_KEYS", "config_changes", "full_hash", "is_mutable", "run_hash", "stored_run_defaults"]


# Keys a resumed run may change (``ebmlab train --resume --set KEY=VALUE``): how long it trains, how often
# it logs, checkpoints and samples, and everything of ``eval``. Every other key is fixed by the checkpoints.
MUTABLE_KEYS = ("train.steps", "train.time_budget", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                "train.sample_every", "train.progress", "eval.*")


def is_mutable(key: str) -> bool:
    """Whether ``key`` (``section.key``) may change when a run is resumed (``MUTABLE_KEYS``)."""
    section = key.split(".", 1)[0]
    return key in MUTABLE_KEYS or f"{section}.*" in MUTABLE_KEYS


def _flat(raw: dict) -> dict[str, Any]:
    """{"section.key": value} of a config mapping (``Config.to_dict()``)."""
    return {f"{sec}.{k}": v for sec, vals in raw.items() if isinstance(vals, dict) for k, v in vals.items()}


# Keys added after runs existed: left out of the hashes while at their default (None), so the checkpoints
# of runs written before them still match their config.yaml.
_NEW_KEYS = ("model.target", "model.kwargs", "data.hflip", "model.blocks", "model.down_last",
             "model.attention_at", "model.last_activation")
# paper 004's MALA rule (objectives/contrastive.py, issue 15): None = the Robbins-Monro rule of older runs
_NEW_KEYS += ("method.step_rule", "method.proposal_cap")
# where noise-initialised training chains start (docs/paper004.md, the demo's ring masses): None = init_std
_NEW_KEYS += ("method.train_init_std",)
# a wall-clock cap on training (issue 18, the leaderboard): None = off
_NEW_KEYS += ("train.time_budget",)
# resample-move AIS for the noise chains (samplers/ais.py): None = plain AIS in runs stored before the key
# (ContrastiveConfig now resolves None to AIS_RESAMPLE, 0.5, for ais chains)
_NEW_KEYS += ("method.ais_resample",)
# the MLP's Gaussian base measure (energies/mlp.py): None = none
_NEW_KEYS += ("model.base_std", "model.base")
# the ResNet energy's readout (energies/convnet.py): None = global mean + Dense
_NEW_KEYS += ("model.readout",)
# paper 000's increments layer (energies/time.py): None = zero
_NEW_KEYS += ("method.increments_init",)
# paper 004's refresh of the persistent bank (objectives/contrastive.py): None = batch
_NEW_KEYS += ("method.refresh_mode",)
# paper 003's initializer without labels (objectives/recovery.py, Sec. 4.5): None = as the EBM
_NEW_KEYS += ("method.init_conditional",)
# noise on the training examples as they are drawn (training/loop.py): None = none
_NEW_KEYS += ("data.jitter",)
# a validation split and the checkpoint chosen on it (training/selection.py): None = none
_NEW_KEYS += ("data.val_fraction", "train.select_every")
# the start kept unless a check beats it by a margin (training/selection.py): None = the plain minimum
_NEW_KEYS += ("train.select_margin",)
# Keys added with a non-None default that equals the older behaviour: left out of the hash at that default.
_NEW_KEY_DEFAULTS = {
    # importance-weighted noise chains (samplers/ais.py; docs/paper004.md, the demo's ring masses)
    "method.noise_chain": "short_run",
    # AIS noise chains resample by default since issue 18; 0 (never) is what AIS runs before did
    "method.ais_resample": 0.0,
    # ZCA whitening of vector data (data/dataset.py): off is what runs before did
    "data.whiten": False,
    # a check chosen on its own score (training/selection.py) is what runs before the window did
    "train.select_window": 1,
    # one validation draw per check is what runs before the confirming draws did
    "train.select_draws": 1,
    # the starting point was never a candidate before
    "train.select_start": False,
    # the transform was fitted on the training rows alone before the refit
    "train.select_refit": False,
    # each check drew noise seeded by its step before paired checks
    "train.select_paired": False,
    # no likelihood condition on a check before it
    "train.select_likelihood": False,
}
# Keys whose resolved default changed after runs existed: {key: (condition on the stored run's keys (a value, or
# a tuple of the values it may have), the value those runs ran with)}. A stored config.yaml without the key, or
# with null, ran with that value (``stored_run_defaults``; the key is not hashed at it, above, so their checkpoints
# still match).
_STORED_RUN_DEFAULTS = {
    # runs before the key ran short-run noise chains; a missing one now resolves to AIS for these two schemes
    # (first: the entry below reads the chain filled in)
    "method.noise_chain": ({"method.name": ("noise", "hybrid")}, "short_run"),
    "method.ais_resample": ({"method.noise_chain": "ais"}, 0.0),
}


def stored_run_defaults(raw: dict) -> dict:
    """A run's stored config mapping ``raw`` with the values older runs ran with filled in for keys whose
    default changed since (``_STORED_RUN_DEFAULTS``); a new mapping, ``raw`` is not changed."""
    out = {sec: dict(vals) if isinstance(vals, dict) else vals for sec, vals in raw.items()}
    for key, (when, value) in _STORED_RUN_DEFAULTS.items():
        sec, name = key.split(".", 1)
        vals = out.get(sec)
        if not isinstance(vals, dict) or vals.get(name) is not None:
            continue
        if all(_flat(out).get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in when.items()):
            vals[name] = value
    return out


def _hashed(raw: dict) -> dict[str, Any]:
    return {k: v for k, v in _flat(raw).items()
            if not ((k in _NEW_KEYS and v is None) or (k in _NEW_KEY_DEFAULTS and v == _NEW_KEY_DEFAULTS[k]))}


def run_hash(raw: dict) -> str:
    """16 hex digits of SHA-256 over the config mapping ``raw`` without its mutable keys and without the keys
    added later that sit at their old default (``_NEW_KEYS``, ``_NEW_KEY_DEFAULTS``)."""
    fixed = {k: v for k, v in _hashed(raw).items() if not is_mutable(k)}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_changes(old, new) -> dict[str, tuple]:
    """{"section.key": (old value, new value)} for every key that differs between two ``Config``s."""
    a, b = _flat(old.to_dict()), _flat(new.to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def full_hash(raw: dict) -> str:
    """16 hex digits of SHA-256 over the config mapping ``raw``, mutable keys included, without the keys added
    later that sit at their old default (``_NEW_KEYS``, ``_NEW_KEY_DEFAULTS``)."""
    nested: dict = {}
    for key, v in _hashed(raw).items():
        sec, k = key.split(".", 1)
        nested.setdefault(sec, {})[k] = v
    return hashlib.sha256(json.dumps(nested, sort_keys=True, default=str).encode()).hexdigest()[:16]
