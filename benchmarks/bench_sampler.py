"""Sampler and training-update overhead over their minimal arithmetic, and the peer libraries'
samplers on the same network, all in one process with interleaved repetitions (issue 19, item 4).

    OMP_NUM_THREADS=1 python benchmarks/bench_sampler.py [--threads 1] [--blocks 15] [--json FILE]

Cases: batch 256 and 4096 x two energies: ``default_mlp`` (the default model on the default data,
``build_energy(ModelConfig(), (10,))``: residual MLP, width 128, depth 3, SiLU, 10-D input) and
``small_mlp`` (the same MLP class, width 64, depth 2, 2-D input). Per case, every quantity below is
one item of one interleaved measurement (``_harness.py``: CPU time and wall time, ``--blocks``
blocks, rotated order, per-block ratios, median [q1-q3]):

- ``floor``: one bare forward+backward to the input, ``energy_and_grad(energy, x)``, with the
  parameters as a model has them (trainable). Every ratio of a sampler is per step over this.
- ``floor_frozen``: the same on a copy with ``requires_grad=False`` parameters (what a sampler
  that freezes the network pays; issue 19 measured 2-6 % less).
- ``ebmlab_langevin``: ``run_chain(langevin, energy, x, K, eps)`` / K (K+1 passes: the chain's
  start is evaluated too); ``ebmlab_langevin_nofinal``: the same with ``final_energy=False`` (K
  passes, the count the peers' Langevin makes; batch <= 1024 or ``--full``).
- ``ebmlab_mala``: ``run_chain(mala, ..., controller=StepSizeController(1, eps))`` / K (a fresh
  controller per chain, K+1 passes).
- peers, when importable (``pip install -e '.[bench]'``), on the *same* ``nn.Module`` and the same
  x, K, eps: ``ebmkit_langevin`` (``ebm.samplers.LangevinDynamics.sample``), ``ebmkit_mala``
  (``ebm.samplers.MALA``: two forward+backward passes per step), ``ebmkit_mala_adaptive``
  (``AdaptiveMALA`` with ``warmup=K, steps=0``: K adapting MALA steps, the counterpart of ebmlab's
  MALA + controller; batch <= 1024 or ``--full``), ``torchebm_langevin``
  (``torchebm.samplers.LangevinDynamics.sample`` on a ``torchebm.core.BaseModel`` whose forward
  calls the module; torchebm has no MALA).
- ``update``: the default training update (default config; for ``small_mlp`` with
  ``data.name=8gaussians model.width=64 model.depth=2``) at this batch size:
  ``out = objective(batch, generator=g); out.loss.backward(); opt.step(); opt.zero_grad()``, with
  ``opt = make_optimizer(objective, cfg.train)`` (Adam).
- ``update_ref``: its minimal arithmetic, written here (``LeanReference``), on a copy of the same
  network: the loss forward of the data batch x (with x requiring grad) and one backward of it to x
  with the graph kept (the data chain's start state, E and dE/dx at x, needs no pass of its own);
  n_steps_data bare ``energy_and_grad`` passes (the data chain's steps) and n_steps + 1 (the noise
  chain's start and steps), all at the batch size with the parameters frozen (as the objective's chains
  run them: ``samplers.base.frozen_parameters``); the 2 loss forwards at the chains' end points; the
  hybrid loss lam * [<E(x)> - <E(x_d)> + a (<E(x)^2> + <E(x_d)^2>)] + [same for x_n]; one backward
  to the weights; one Adam step and zero_grad. For the default: 44 forwards and 42 backwards to the
  input (10 + 31 bare passes + the start's backward), + the weight backward and Adam. It leaves out
  what a sampler adds to its passes (noise draws, the Langevin move, the MH test, the step-size
  controller, diagnostics) and the metrics. (Issue 19 counted 42 bare passes + 3 loss forwards: the
  objective then evaluated the data batch twice, once for the loss and once for the chain's start.)
- ``trainer_step``: ``Trainer.train_step()`` on the same config (adds the batch draw, the lr
  schedule, the gradient-norm check/clip, EMA and the metrics read-out); ``trainer_ref``:
  ``update_ref`` plus the minimal arithmetic of those additions (one read of the loss, one gradient
  norm and its finiteness check, one fused EMA lerp). Batch <= 1024 or ``--full``.

``passes`` columns are *counted* (a forward pre-hook on the module during one untimed call, which
also records whether the parameters were frozen), not assumed. A sampler step contains a full floor,
so a CPU ratio below 1.0 prints "WARNING: ... MEASUREMENT IS BROKEN", unless the sampler ran with
frozen parameters and is still >= 0.98 floor_frozen: then a note says so (``CPU/frozen`` column: the
per-step ratio over floor_frozen). The table ends with the issue-19 targets (PASS/FAIL); the last
line printed is the whole result as one JSON object (also written to ``--json FILE``).
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (Item, fmt_q, machine_note, ratio_stats, run_interleaved, source_note, time_stats,
                      training_update, emit)

from ebmlab.config import ModelConfig
from ebmlab.energies.base import energy_and_grad
from ebmlab.energies.build import build_energy
from ebmlab.samplers import StepSizeController, langevin, mala, run_chain
from ebmlab.samplers.base import frozen_parameters
from ebmlab.training.loop import Trainer

ENERGIES = {
    "default_mlp": {"dim": 10, "model": {}, "overrides": [],
                    "desc": "residual MLP width 128 depth 3, 10-D (build_energy(ModelConfig(), (10,)))"},
    "small_mlp": {"dim": 2, "model": {"width": 64, "depth": 2},
                  "overrides": ["data.name=8gaussians", "model.width=64", "model.depth=2"],
                  "desc": "residual MLP width 64 depth 2, 2-D"},
}
LABELS = {
    "floor_frozen": "floor, parameters frozen",
    "ebmlab_langevin": "ebmlab langevin run_chain / K",
    "ebmlab_langevin_nofinal": "ebmlab langevin final_energy=False",
    "ebmlab_mala": "ebmlab mala + controller",
    "ebmkit_langevin": "ebmkit LangevinDynamics",
    "ebmkit_mala": "ebmkit MALA",
    "ebmkit_mala_adaptive": "ebmkit AdaptiveMALA (warmup=K)",
    "torchebm_langevin": "torchebm LangevinDynamics",
}
SAMPLERS = [k for k in LABELS if k != "floor_frozen"]
FULL_BATCH_LIMIT = 1024
# A step that freezes the parameters contains a floor_frozen pass; below this many floor_frozen it is
# cheaper than the pass it contains, beyond the ~1-2 % per-block noise of a 15-block median.
FROZEN_TOLERANCE = 0.98
NOISY_IQR = 0.10  # a CPU ratio whose interquartile range exceeds 10 % of its median is flagged


# ----- peers ------------------------------------------------------------------------------------------
def peer_status() -> dict[str, str]:
    """{"ebmkit": version | "unavailable: reason", "torchebm": ...}."""
    from importlib import import_module
    from importlib.metadata import version

    status = {}
    for name, module in (("ebmkit", "ebm.samplers.langevin"), ("torchebm", "torchebm.samplers.langevin_dynamics")):
        try:
            import_module(module)
            status[name] = version(name)
        except Exception as exc:  # noqa: BLE001 -- any failure means "not comparable here"
            status[name] = f"unavailable: {type(exc).__name__}: {exc}"
    return status


def torchebm_model(module: torch.nn.Module, device: torch.device):
    """The module as a torchebm ``BaseModel`` (its samplers call ``model.gradient(x)``); the forward
    is the module's, so both libraries differentiate the same network."""
    from torchebm.core import BaseModel

    class SameModule(BaseModel):
        def __init__(self, net):
            super().__init__(device=device)
            self.net = net

        def forward(self, x):
            return self.net(x)

    return SameModule(module)


def peer_items(status: dict, energy, x, k: int, eps: float, device, small_batch: bool) -> list[Item]:
    items = []
    if not status["ebmkit"].startswith("unavailable"):
        from ebm.samplers import MALA, AdaptiveMALA, LangevinDynamics
        ula, mh = LangevinDynamics(step_size=eps, steps=k), MALA(step_size=eps, steps=k)
        items += [Item("ebmkit_langevin", lambda: ula.sample(energy, x), per=k),
                  Item("ebmkit_mala", lambda: mh.sample(energy, x), per=k)]
        if small_batch:  # a fresh sampler per chain: AdaptiveMALA overwrites its step size
            items.append(Item("ebmkit_mala_adaptive",
                              lambda: AdaptiveMALA(step_size=eps, steps=0, warmup=k).sample(energy, x), per=k))
    if not status["torchebm"].startswith("unavailable"):
        from torchebm.samplers import LangevinDynamics as TLangevin
        sampler = TLangevin(torchebm_model(energy, device), step_size=eps, noise_scale=1.0, device=device)
        items.append(Item("torchebm_langevin", lambda: sampler.sample(x=x, n_steps=k), per=k))
    return items


# ----- the training update and its minimal arithmetic ----------------------------------------------------
class LeanReference:
    """The minimal arithmetic of one default hybrid update (see the module docstring), on its own copy
    of the network with its own Adam. ``trainer=True`` adds what ``Trainer.train_step`` needs on top:
    a read of the loss, the gradient norm with its finiteness check, and one fused EMA update."""

    def __init__(self, energy: torch.nn.Module, cfg, x_data: torch.Tensor, generator: torch.Generator):
        m, tc = cfg.method, cfg.train
        if m.name != "hybrid":
            raise ValueError(f"LeanReference counts the passes of the hybrid objective, not {m.name!r}")
        self.energy = energy
        self.params = [p for p in energy.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
        self.n_data = m.n_steps_data or m.n_steps
        self.n_noise = m.n_steps
        self.input_backwards = 1 + self.n_data + (self.n_noise + 1)  # data start + data steps + noise chain
        self.forwards = 1 + self.n_data + (self.n_noise + 1) + 2
        self.lam, self.l2 = m.lam, m.energy_l2
        self.x = x_data
        self.x_noise = m.init_std * torch.randn(x_data.shape, generator=generator, device=x_data.device)
        self.shadow = [p.detach().clone() for p in self.params]
        self.ema = tc.ema if tc.ema is not None else 0.0

    def _term(self, e_pos, e_neg):
        term = e_pos.mean() - e_neg.mean()
        if self.l2 > 0:
            term = term + self.l2 * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        return term

    def __call__(self, trainer: bool = False) -> None:
        energy = self.energy
        x_in = self.x.detach().requires_grad_(True)
        e_pos = energy(x_in)  # loss forward 1, with its graph to the weights and to x
        torch.autograd.grad(e_pos.sum(), x_in, retain_graph=True)  # the data chain's start: dE/dx at x
        with frozen_parameters(energy):  # as the objective's chains: no weight-side autograd state in their passes
            for _ in range(self.n_data):  # the data chain's steps
                energy_and_grad(energy, self.x)
            for _ in range(self.n_noise + 1):  # the noise chain: its start and its steps
                energy_and_grad(energy, self.x_noise)
        loss = self.lam * self._term(e_pos, energy(self.x)) + self._term(e_pos, energy(self.x_noise))
        loss.backward()
        if trainer:
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError("reference loss is not finite")
            gnorm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in self.params])))
            if not bool(torch.isfinite(gnorm)):
                raise FloatingPointError("reference gradient is not finite")
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if trainer and self.ema:
            torch._foreach_lerp_(self.shadow, self.params, 1.0 - self.ema)


def training_items(spec: dict, batch: int, device, threads: int, with_trainer: bool, tmp: Path,
                   extra: list[str] | None = None):
    overrides = spec["overrides"] + list(extra or []) + [f"train.batch_size={batch}", "train.progress=false",
                                     f"train.threads={threads}", f"train.device={device}"]
    cfg, data, objective, update, xb = training_update(overrides)
    ref = LeanReference(copy.deepcopy(objective.energy), cfg, xb, torch.Generator(device).manual_seed(3))
    items = [Item("update", update), Item("update_ref", ref)]
    modules = {"update": objective.energy, "update_ref": ref.energy}
    if with_trainer:
        trainer = Trainer(cfg, tmp / f"run_{batch}_{spec['dim']}", data=data)
        tref = LeanReference(copy.deepcopy(trainer.objective.energy), cfg, xb, torch.Generator(device).manual_seed(4))
        items += [Item("trainer_step", trainer.train_step), Item("trainer_ref", lambda: tref(trainer=True))]
        modules.update(trainer_step=trainer.objective.energy, trainer_ref=tref.energy)
    torch.set_num_threads(threads)  # whatever policy the Trainer applies, the benchmark runs on --threads
    return items, modules, ref.input_backwards, cfg


# ----- one case ---------------------------------------------------------------------------------------
def count_forwards(module: torch.nn.Module, fn) -> tuple[int, bool]:
    """(forward calls of ``module`` during ``fn()``, whether every one ran with frozen parameters)."""
    calls, frozen = [0], [0]

    def hook(mod, args):
        calls[0] += 1
        frozen[0] += not any(p.requires_grad for p in mod.parameters())

    handle = module.register_forward_pre_hook(hook)
    try:
        fn()
    finally:
        handle.remove()
    return calls[0], calls[0] > 0 and frozen[0] == calls[0]


def measure_case(name: str, batch: int, args, peers: dict, tmp: Path) -> dict:
    spec = ENERGIES[name]
    device = torch.device(args.device)
    small_batch = args.full or batch <= FULL_BATCH_LIMIT
    k, eps = args.steps, args.step_size
    torch.manual_seed(0)
    energy = build_energy(ModelConfig(**spec["model"]), (spec["dim"],)).to(device)
    frozen = copy.deepcopy(energy).requires_grad_(False)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, spec["dim"], generator=g, device=device)

    items = [
        Item("floor", lambda: energy_and_grad(energy, x)),
        Item("floor_frozen", lambda: energy_and_grad(frozen, x)),
        Item("ebmlab_langevin", lambda: run_chain(langevin, energy, x, k, eps, generator=g), per=k),
        Item("ebmlab_mala", lambda: run_chain(mala, energy, x, k, eps, generator=g,
                                              controller=StepSizeController(1, eps).to(device)), per=k),
    ]
    if small_batch:
        items.append(Item("ebmlab_langevin_nofinal",
                          lambda: run_chain(langevin, energy, x, k, eps, final_energy=False, generator=g), per=k))
    if not args.no_peers:
        items += peer_items(peers, energy, x, k, eps, device, small_batch)
    modules = {it.name: (frozen if it.name == "floor_frozen" else energy) for it in items}
    n_fb = None
    if not args.no_train:
        t_items, t_modules, n_fb, _ = training_items(spec, batch, device, args.threads,
                                                     small_batch and not args.no_trainer, tmp, args.set)
        items += t_items
        modules.update(t_modules)
    # One untimed call of every item counts its forwards (the first, cold call: allocator, oneDNN
    # primitives); a second untimed call, warm, sets an item slower than --item-ms to one call per
    # stretch (reps = 1). Sizing from the cold call made the very first item (the floor) look slow and
    # time it one call at a time (run of 2026-12-02: floor 1.72 ms instead of 1.37).
    passes, frozen_params, first_call = {}, {}, {}
    for it in items:
        n_fwd, frozen_params[it.name] = count_forwards(modules[it.name], it.fn)
        passes[it.name] = n_fwd / it.per
        c0 = time.process_time()
        it.fn()
        first_call[it.name] = time.process_time() - c0
        if first_call[it.name] > args.item_ms / 1000:
            it.reps, it.warmup = 1, 0
    # The floor stretches around an item last at least --anchor-ms and a tenth of the typical item,
    # so that at large batches a single floor call's own noise does not dominate the anchor.
    typical = sorted(first_call.values())[len(first_call) // 2]
    anchor_s = max(args.anchor_ms / 1000, typical / 10)

    t0 = time.perf_counter()
    meas = run_interleaved(items, blocks=args.blocks, item_s=args.item_ms / 1000, anchor="floor",
                           anchor_s=anchor_s, clock=args.clock, device=device, warmup_calls=1,
                           progress=(lambda s: print(f"  {name}/{batch}: {s}", end="\r", file=sys.stderr,
                                                     flush=True)))
    print(" " * 60, end="\r", file=sys.stderr)
    names = [it.name for it in items]
    ratios = {n: ratio_stats(meas, n, "floor") for n in names if n in LABELS}
    for n in SAMPLERS:
        if n in ratios:
            ratios[n]["over_frozen"] = ratio_stats(meas, n, "floor_frozen")
    if "update" in names:
        ratios["update/ref"] = ratio_stats(meas, "update", "update_ref")
        ratios["update/floors"] = ratio_stats(meas, "update", "floor", den_scale=n_fb)
    if "trainer_step" in names:
        ratios["trainer/ref"] = ratio_stats(meas, "trainer_step", "trainer_ref")
    return {"energy": spec["desc"], "batch": batch, "seconds": round(time.perf_counter() - t0, 1),
            "floor_ms": _scaled(time_stats(meas, "floor"), 1e3),
            "ms_per_unit": {n: _scaled(time_stats(meas, n), 1e3) for n in names},
            "reps_per_block": meas["reps"],
            "passes": passes, "frozen_params": frozen_params, "update_ref_input_backwards": n_fb, "ratios": ratios}


def _scaled(stats: dict, factor: float) -> dict:
    return {k: {q: v * factor for q, v in d.items()} for k, d in stats.items()}


# ----- report -----------------------------------------------------------------------------------------
def check_case(key: str, case: dict) -> tuple[list[str], list[str]]:
    """(warnings, notes). Warning: a ratio that cannot be (a step cheaper than the pass it contains), or
    a noisy one. Note: a step below the floor that is explained by frozen parameters."""
    warnings, notes = [], []
    r = case["ratios"]
    for n in SAMPLERS:
        if n not in r:
            continue
        for clk in ("cpu", "wall"):
            med, over_frozen = r[n][clk]["median"], r[n]["over_frozen"][clk]["median"]
            if med >= 1.0:
                continue
            if case["frozen_params"][n] and over_frozen >= FROZEN_TOLERANCE:
                if clk == "cpu":
                    notes.append(f"{key}: {n} is {med:.3f} floors but {over_frozen:.3f} floor_frozen: it freezes "
                                 "the network's parameters while sampling (a cheaper pass than the floor's)")
            elif clk == "cpu":
                warnings.append(f"{key}: {n} CPU ratio {med:.3f} < 1.0 ({over_frozen:.3f} over floor_frozen) for a "
                                "step that contains a full forward+backward: the MEASUREMENT IS BROKEN, do not use "
                                "these numbers")
            else:
                warnings.append(f"{key}: {n} wall ratio {med:.3f} < 1.0 ({over_frozen:.3f} over floor_frozen): "
                                "the wall clock is distorted by the machine's load here; use the CPU ratio")
        q = r[n]["cpu"]
        if (q["q3"] - q["q1"]) / q["median"] > NOISY_IQR:
            warnings.append(f"{key}: {n} CPU ratio is noisy (IQR {q['q1']:.3f}-{q['q3']:.3f}); rerun with more "
                            "--blocks or on a quieter machine")
    for n, what in (("update/ref", "update"), ("trainer/ref", "trainer_step")):
        if n in r and r[n]["cpu"]["median"] < 1.0:
            ref = "trainer_ref" if what == "trainer_step" else "update_ref"
            warnings.append(f"{key}: {what} / its minimal arithmetic = {r[n]['cpu']['median']:.3f} < 1.0: the "
                            f"update makes fewer passes than the reference counts (forwards counted: {what} "
                            f"{case['passes'][what]:.0f}, reference {case['passes'][ref]:.0f}): recount the "
                            "reference (LeanReference), or the measurement is broken")
    return warnings, notes


def goals(cases: dict) -> list[dict]:
    """The issue-19 targets at batch 256 (CPU medians)."""
    out = []

    def add(what, value, limit, ok):
        out.append({"goal": what, "value": None if value is None else round(value, 4), "limit": limit,
                    "pass": bool(ok) if value is not None else None})

    for name, mala_lim, lang_lim in (("default_mlp", 1.15, 1.10), ("small_mlp", 1.5, 1.3)):
        c = cases.get(f"{name}/256")
        if c is None:
            continue
        r = {n: v["cpu"]["median"] for n, v in c["ratios"].items()}
        add(f"{name}/256 ebmlab MALA+controller per step <= {mala_lim} x floor", r["ebmlab_mala"], mala_lim,
            r["ebmlab_mala"] <= mala_lim)
        add(f"{name}/256 ebmlab Langevin per step <= {lang_lim} x floor", r["ebmlab_langevin"], lang_lim,
            r["ebmlab_langevin"] <= lang_lim)
        if name == "default_mlp" and "update/ref" in r:
            add("default_mlp/256 training update <= 1.10 x its minimal arithmetic", r["update/ref"], 1.10,
                r["update/ref"] <= 1.10)
        peer_mala = {n: r[n] for n in ("ebmkit_mala", "ebmkit_mala_adaptive") if n in r}
        for n, v in peer_mala.items():
            add(f"{name}/256 ebmlab MALA faster than {n}", r["ebmlab_mala"] / v, 1.0, r["ebmlab_mala"] < v)
        peer_lang = {n: r[n] for n in ("ebmkit_langevin", "torchebm_langevin") if n in r}
        if peer_lang:
            # like for like: the peers make K passes for K steps and return no energy, so ebmlab's chain
            # is compared without its final evaluation (K + 1 passes otherwise) where that row was timed
            mine = "ebmlab_langevin_nofinal" if "ebmlab_langevin_nofinal" in r else "ebmlab_langevin"
            best = min(peer_lang, key=peer_lang.get)
            add(f"{name}/256 ebmlab Langevin ({mine}) within 5 % of the faster peer ({best})",
                r[mine] / peer_lang[best], 1.05, r[mine] <= 1.05 * peer_lang[best])
    return out


def print_case(key: str, c: dict) -> None:
    f = c["floor_ms"]
    print(f"\n== {key}: {c['energy']}, batch {c['batch']}  ({c['seconds']:.0f} s)")
    print(f"   floor = energy_and_grad: {fmt_q(f['cpu'])} ms CPU, {fmt_q(f['wall'])} ms wall "
          f"(wall/CPU {f['wall']['median'] / f['cpu']['median']:.2f})")
    print(f"   {'per step over the floor':36s} {'passes':>6s}  {'CPU ratio [q1-q3]':22s} {'wall ratio [q1-q3]':22s} "
          f"{'CPU ms/step':>11s} {'CPU/frozen':>10s} {'frozen?':>7s}")
    for n, label in LABELS.items():
        if n in c["ratios"]:
            r = c["ratios"][n]
            fr = (f"{r['over_frozen']['cpu']['median']:10.3f} {'yes' if c['frozen_params'][n] else 'no':>7s}"
                  if "over_frozen" in r else "")
            print(f"   {label:36s} {c['passes'][n]:6.3g}  {fmt_q(r['cpu']):22s} {fmt_q(r['wall']):22s} "
                  f"{c['ms_per_unit'][n]['cpu']['median']:11.3f} {fr}")
    rows = (("update/ref", "update", "training update / lean reference"),
            ("update/floors", "update", f"training update / ({c['update_ref_input_backwards']} x floor)"),
            ("trainer/ref", "trainer_step", "Trainer.train_step / reference+EMA"))
    for key_r, item, label in rows:
        if key_r in c["ratios"]:
            r = c["ratios"][key_r]
            print(f"   {label:36s} {c['passes'][item]:6.3g}  {fmt_q(r['cpu']):22s} {fmt_q(r['wall']):22s} "
                  f"{c['ms_per_unit'][item]['cpu']['median']:11.2f}")
    if "update_ref" in c["passes"]:
        print(f"   (passes: forwards per step or per update, counted. The lean reference makes "
              f"{c['passes']['update_ref']:.0f} forwards and {c['update_ref_input_backwards']} backwards to the input; "
              f"its CPU time {c['ms_per_unit']['update_ref']['cpu']['median']:.2f} ms)")


def _rounded(obj, digits: int = 4):
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--blocks", type=int, default=15, help="interleaved blocks (default 15)")
    p.add_argument("--item-ms", type=float, default=50.0,
                   help="CPU milliseconds each item runs per block, at least one call (default 50)")
    p.add_argument("--anchor-ms", type=float, default=20.0,
                   help="CPU milliseconds of each floor stretch between two items, at least one call and at least a "
                        "tenth of a typical item's call (default 20)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default 256 4096 (--quick: 256)")
    p.add_argument("--energies", nargs="+", choices=sorted(ENERGIES), default=list(ENERGIES))
    p.add_argument("--steps", type=int, default=30, help="chain length K (default 30, the default n_steps)")
    p.add_argument("--step-size", type=float, default=0.01, help="eps (default 0.01, the default step_size)")
    p.add_argument("--clock", choices=("process", "thread"), default="process",
                   help="CPU clock: time.process_time (default) or time.thread_time (threads=1 only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true",
                   help=f"also measure the extra rows at batches > {FULL_BATCH_LIMIT} (slow)")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--no-train", action="store_true", help="skip the training-update rows")
    p.add_argument("--no-trainer", action="store_true", help="skip the Trainer.train_step rows")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 blocks, 20 ms items, batch 256 unless --batches")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the training-update rows (repeatable), e.g. "
                        "method.noise_chain=short_run: the short-run noise chains instead of the default's AIS")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.blocks, args.item_ms = 3, 20.0
    if args.batches is None:
        args.batches = [256] if args.quick else [256, 4096]
    if args.clock == "thread" and args.threads != 1:
        p.error("--clock thread measures only the calling thread; use --clock process with --threads > 1")
    torch.set_num_threads(args.threads)
    start = machine_note()
    peers = {"ebmkit": "not run", "torchebm": "not run"} if args.no_peers else peer_status()
    print(f"bench_sampler: torch {start['torch']}, threads {args.threads}, clock {args.clock}, "
          f"{args.blocks} blocks, K={args.steps}, eps={args.step_size}, device {args.device}; "
          f"load average {start['loadavg']} on {start['cpu_count']} cores")
    print(f"peers: {', '.join(f'{k} {v}' for k, v in peers.items())}")
    if args.set:
        print(f"training-update rows with: {' '.join(args.set)}")
    t0 = time.perf_counter()
    cases, warnings, notes = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batches:
            for name in args.energies:
                key = f"{name}/{batch}"
                cases[key] = measure_case(name, batch, args, peers, Path(tmp))
                print_case(key, cases[key])
                w, nt = check_case(key, cases[key])
                warnings += w
                notes += nt
    command = " ".join(["python", sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    result = {"benchmark": "bench_sampler", "command": command,
              "source": source_note(), "torch": start["torch"], "threads": args.threads, "clock": args.clock,
              "device": args.device,
              "blocks": args.blocks, "K": args.steps, "step_size": args.step_size, "train_overrides": args.set,
              "machine": start,
              "loadavg_end": machine_note()["loadavg"], "seconds": round(time.perf_counter() - t0, 1),
              "peers": peers, "cases": cases, "goals": goals(cases), "warnings": warnings,
              "notes": notes}
    result = _rounded(result)
    print("\nissue-19 targets (CPU medians, batch 256):")
    for gl in result["goals"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[gl["pass"]]
        print(f"   {verdict}  {gl['goal']}: {gl['value']}")
    for nt in notes:
        print(f"note: {nt}")
    for w in warnings:
        print(f"WARNING: {w}")
    return emit(result, args.json)


if __name__ == "__main__":
    main()
