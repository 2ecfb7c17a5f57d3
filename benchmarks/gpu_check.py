"""The prepared GPU check of issue 20: run the CUDA test suite, then measure every image configuration
of papers 000-004 on synthetic CIFAR-shaped data; write one JSON file and one markdown table.

    bash benchmarks/gpu_check.sh                      # on the GPU machine; output in --out, $OUT or <repo>/gpu_check_out
    python benchmarks/gpu_check.py --cpu-smoke        # the same code path on the CPU, tiny, ~10 s

Installs nothing and downloads nothing: it needs torch and ebmlab's dependencies (``deps_missing`` in
the JSON lists any that are absent) and pytest for the test part. Everything is time-boxed: the whole
run aims at ``--budget-s`` (default 480 s = 8 minutes) of wall time (a configuration's first step, FLOP count
and timings are not cut off, so it can run past it); the tests get the smaller of ``--tests-budget-s`` and half
the budget (60 s with ``--cpu-smoke``), and up to 30 s more to stop after the interrupt; each configuration gets an equal share of what is left, and a
configuration that would start with less than ``--min-config-s`` left is recorded as skipped
("time budget"), never silently dropped. Results are written after every configuration, so a run
that is killed still leaves its JSON and table.

Per configuration (``CONFIGS``; the shipped config at its paper batch size, on random images of shape
(B, 3, 32, 32) uniform in [-1, 1], fed through ``Trainer.train_step`` exactly as in training: batch
draw, objective forward with its sampler chains, backward, clipping check, optimizer, EMA), once in
fp32 (the configs' own setting) and once with ``train.amp=true`` (bf16 autocast):

- ``steps_per_s``: training steps per second over up to ``--steps`` timed steps after ``--warmup``
  untimed ones (fewer when the time box runs out: ``timed_steps`` says how many);
- ``peak_mem_gib``: ``torch.cuda.max_memory_allocated`` from building the trainer to the last step;
- ``sampler_over_floor``: one sampler step (``samplers.run_chain`` with the method's sampler, K =
  ``--chain-steps``, per step) over one bare forward+backward to the input of the same energy on the
  same (B, ...) input and conditioning (the call the method's chains make, captured during a warm-up
  step). Langevin chains run with ``final_energy=False`` (exactly K passes); MALA (paper 000) needs
  its start pass too, so its ratio includes (K+1)/K (1.1 at the default ``--chain-steps`` 10) at zero overhead;
- ``floor_tflops`` / ``floor_peak_frac``: FLOPs of that forward+backward (``FlopCounterMode``:
  matmuls, convolutions, attention) over its measured time, and that over the bf16 peak
  (``--peak-tflops``, 790 for the H200: issue 20);
- ``step_tflops`` / ``step_peak_frac``: the same for a whole training step (FLOPs of one step counted
  once in fp32, times the measured steps per second);
- ``hours_full_run``: the run's length (its spec's ``run_steps`` where set, e.g. paper 000's stages, else the
  config's ``train.steps``: the paper's iteration count, or our choice where the paper gives none) divided by
  steps per second, in hours on one GPU.

``--cpu-smoke`` runs all of this on the CPU with networks and chains shrunk to a few channels and
steps (batch 4, one warm-up and one timed step, fp32 only): it checks the code path, not the speed.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import gc
import importlib.util
import inspect
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402  (after the sys.path line above)

SCHEMA = "ebmlab-gpu-check/1"
PEAK_BF16_TFLOPS = 790.0  # H200 dense bf16, as measured on that machine (issue 20)
DEPENDENCIES = ["numpy", "scipy", "sklearn", "safetensors", "yaml", "matplotlib", "tqdm", "tensorboard", "PIL"]


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str                 # row name
    config: str               # shipped config it is built from
    paper: str
    overrides: tuple = ()     # applied on top of the shipped config
    note: str = ""
    run_steps: int | None = None  # training steps of a full run at this row's rate (None: train.steps)


CONFIGS = [
    Spec("paper000_cifar10_cdce", "paper000_cifar10_cdce", "000", run_steps=60000,
         note="shipped config (App. C.2): ResNet-18 trunk, T = 1024, batch 512, MALA K = 5, the chain "
              "length of steps 0-40k; K ramps linearly to 100 over steps 40k-80k and stays there to 300k. "
              "A step's time is linear in K, so the ramp costs 20k steps at K = 5 plus 20k at K = 100: "
              "this row counts 40k + 20k = 60k steps, the K100 row 20k + 220k = 240k; a full run is the "
              "sum of the two rows' hours"),
    Spec("paper000_cifar10_cdce_K100", "paper000_cifar10_cdce", "000", overrides=("method.n_steps=100",),
         run_steps=240000,
         note="the same with K = 100 MALA steps (steps 80k-300k, and half of the ramp): see the row above"),
    Spec("paper001_cifar10", "paper001_cifar10", "001",
         note="shipped config (App. B): multi-scale ResNet with attention, 40 Langevin steps, KL + "
              "entropy terms, augmentation, buffer 10k; batch 128 is our choice (not in the paper)"),
    Spec("paper002_cifar10", "paper002_cifar10", "002",
         note="shipped config (Table 7 ResNet column): T = 20, K = 3, gradient penalty; batch 256"),
    Spec("paper003_cifar10", "paper003_cifar10", "003",
         note="shipped config (App. A): 4x8 ResBlocks, spectral norm, T = 6, K = 15, UNet initializer; "
              "batch 256 is our choice (not in the paper)"),
    Spec("paper004_cifar10", "paper004_cifar10", "004",
         note="shipped config (Sec. 4.2, App. A): Nijkamp et al.'s ConvNet n_f = 128 with self-attention, "
              "hybrid lambda 25, L = 500 for both chains, eps 1, T 5e-5, 50,000 iterations, no EMA; batch 64 "
              "is our choice (not in the paper)"),
]

# --cpu-smoke: the same code path with networks and chains shrunk (keys applied where they exist).
SMOKE_MODEL = ["model.channels=[8,8]", "model.depth=1", "model.time_embed_dim=16", "model.width=16"]
SMOKE_MODEL_BY_NAME = {"plainconv": ["model.channels=[4,8,8,8]"]}  # it needs n_f, 2 n_f, 4 n_f, 8 n_f widths
SMOKE_METHOD = {"n_steps": 2, "n_steps_data": 2, "n_steps_final": 2, "K": 2, "T": 4, "buffer_size": 32,
                "n_entropy": 4, "init_channels": "[8,8]", "embed_dim": 16, "sample_steps": 2, "sample_rounds": 1}


# ----- small helpers ------------------------------------------------------------------------------
def _now() -> float:
    return time.perf_counter()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gib(n: int | None) -> float | None:
    return None if n is None else n / 2**30


def _fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _pair(a, b, spec: str = ".3g") -> str:
    return f"{_fmt(a, spec)} / {_fmt(b, spec)}"


def _err(exc: BaseException) -> dict:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
            "traceback_tail": "".join(tb)[-2500:]}


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(), "device": str(device), "cpu_count": os.cpu_count(),
           "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
           "deps_missing": [m for m in DEPENDENCIES + ["pytest"] if importlib.util.find_spec(m) is None]}
    if device.type == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   gpu_count=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version())
    return env


# ----- the CUDA tests ------------------------------------------------------------------------------
def run_tests(out: Path, timeout_s: float, cpu_smoke: bool, workers: int = 0) -> dict:
    """``pytest -m cuda tests/cuda`` in a subprocess with a junit report; counts and failures. At the
    time limit pytest gets SIGINT (it then still writes its summary and the junit file of the tests
    that ran), and is killed 30 s later if it has not stopped. ``workers`` > 0 spreads the tests over
    that many pytest-xdist processes sharing the GPU (when xdist is installed)."""
    if importlib.util.find_spec("pytest") is None:
        return {"ran": False, "reason": "pytest is not installed"}
    xml, log = out / "cuda_tests.xml", out / "cuda_tests.log"
    xml.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/cuda", "-v", "-p", "no:cacheprovider",
           "-rfEsxX", "--durations=15", f"--junitxml={xml}"]
    if workers > 0 and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", str(workers)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    if cpu_smoke:
        env.setdefault("OMP_NUM_THREADS", "1")
    t0 = _now()
    timed_out = False
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGINT)  # pytest: stop, report what ran, write the junit file
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    text = log.read_text(errors="replace", encoding="utf-8")
    result = {"ran": True, "command": "python " + " ".join(cmd[1:]), "rc": rc, "timed_out": timed_out,
              "wall_s": round(_now() - t0, 1), "log": log.name, "tail": text[-3000:]}
    if xml.is_file():
        try:
            result.update(_junit(xml))
        except ET.ParseError as exc:
            result["junit_error"] = str(exc)
    return result


def _junit(xml: Path) -> dict:
    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = []
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                failed.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": tag,
                               "message": " ".join((node.get("message") or "").split())[:400]})
    return {**counts, "failed_tests": failed, "junit": xml.name}


# ----- one configuration -----------------------------------------------------------------------------
def synthetic_cifar(n: int, seed: int = 0):
    """An in-memory stand-in for CIFAR-10: n random images (n, 3, 32, 32) uniform in [-1, 1], 10 labels."""
    from ebmlab.data.base import Affine, Dataset

    g = torch.Generator().manual_seed(seed)
    m = max(8, n // 8)
    train, test = torch.rand((n, 3, 32, 32), generator=g) * 2 - 1, torch.rand((m, 3, 32, 32), generator=g) * 2 - 1
    ytr, yte = torch.randint(10, (n,), generator=g), torch.randint(10, (m,), generator=g)
    return Dataset("cifar10 (synthetic)", "image", train, test, Affine.identity(), ytr, yte, 10,
                   info={"range": "[-1, 1]", "layout": "NCHW", "synthetic": True})


def build_config(spec: Spec, args, amp: bool):
    from ebmlab.objectives import METHODS
    from ebmlab.training.config import load_config

    base = load_config(spec.config, list(spec.overrides))
    over = list(spec.overrides) + ["train.progress=false", f"train.device={args.device}",
                                   f"train.amp={'true' if amp else 'false'}",
                                   f"train.compile={'true' if args.compile else 'false'}"]
    if args.cpu_smoke:
        fields = {f.name for f in dataclasses.fields(METHODS[base.method.name].config)}
        smoke_model = SMOKE_MODEL_BY_NAME.get(base.model.name, SMOKE_MODEL)
        over += smoke_model + [f"method.{k}={v}" for k, v in SMOKE_METHOD.items() if k in fields]
        over += [f"train.batch_size={args.smoke_batch}", "train.threads=1"]
    return load_config(spec.config, over)


def smaller_steps(cfg) -> list[str]:
    """Overrides dividing the method's chain step sizes by 100 (the keys the config has)."""
    return [f"method.{k}={getattr(cfg.method, k) / 100!r}" for k in ("step_size", "eta", "step_coef")
            if isinstance(getattr(cfg.method, k, None), (int, float)) and not isinstance(getattr(cfg.method, k), bool)]


def sampler_of(cfg) -> str:
    """The sampler of the method's training chains: paper 000's are MALA, paper 004's configurable,
    the others unadjusted Langevin."""
    from ebmlab.objectives import METHODS, joint_time

    if METHODS[cfg.method.name].build is joint_time.build:
        return "mala"
    return getattr(cfg.method, "sampler", "langevin")


class EnergyCalls:
    """Forward pre-hooks on the energy and its submodules during one training step: the outermost
    module the step calls (paper 003's training calls ``energy.net``, not ``energy``), its calls and
    examples per step, and one call of it at the batch size (input and conditioning) to replay."""

    def __init__(self, energy: torch.nn.Module, batch: int):
        self.batch, self.order = batch, list(energy.modules())
        self.calls: dict[int, list] = {}
        self.handles = [m.register_forward_pre_hook(self._hook(i), with_kwargs=True) for i, m in enumerate(self.order)]

    def _hook(self, i: int):
        def hook(module, args, kwargs):
            rec = self.calls.setdefault(i, [0, 0, None])
            rec[0] += 1
            x = args[0] if args and torch.is_tensor(args[0]) else None
            rec[1] += int(x.shape[0]) if x is not None and x.dim() > 0 else 0
            if x is not None and (rec[2] is None or (rec[2][0].shape[0] != self.batch and x.shape[0] == self.batch)):
                clone = lambda v: v.detach().clone() if torch.is_tensor(v) else v  # noqa: E731
                rec[2] = (clone(x), tuple(clone(a) for a in args[1:]), {k: clone(v) for k, v in kwargs.items()})
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def outermost(self):
        """(module, calls per step, examples per step, (x, args, kwargs)) or None."""
        for i in sorted(self.calls):
            if self.calls[i][2] is not None:
                return self.order[i], self.calls[i][0], self.calls[i][1], self.calls[i][2]
        return None


def _autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else contextlib.nullcontext()


def _time_blocks(fns: dict, device: torch.device, blocks: int, min_block_s: float, max_reps: int) -> dict:
    """Median seconds per call of each function, over ``blocks`` interleaved blocks; each block calls a
    function until ``min_block_s`` has passed (at most ``max_reps`` times)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for b in range(blocks):
        names = list(fns)[b % len(fns):] + list(fns)[:b % len(fns)]  # rotate the order per block
        for k in names:
            _sync(device)
            t0, n = _now(), 0
            while n < max_reps and (n == 0 or _now() - t0 < min_block_s):
                fns[k]()
                n += 1
            _sync(device)
            times[k].append((_now() - t0) / n)
    return {k: statistics.median(v) for k, v in times.items()}


def measure_energy(cfg, captured, device, amp: bool, args, flops_floor: float | None) -> dict:
    """Sampler step / bare forward+backward on the captured call, and the FLOP rate of the latter."""
    from ebmlab.samplers import StepSizeController, langevin, mala, run_chain
    from ebmlab.samplers.base import frozen_parameters

    module, _, _, (x0, extra, kwargs) = captured
    call = lambda v: module(v, *extra, **kwargs)  # noqa: E731
    kind = sampler_of(cfg)
    k = args.chain_steps
    g = torch.Generator(device).manual_seed(0)
    no_check = {"check_finite": False} if "check_finite" in inspect.signature(run_chain).parameters else {}

    def floor():  # parameters frozen, as in every chain: the gradient to the input alone
        x = x0.detach().requires_grad_(True)
        with _autocast(device, amp), torch.enable_grad(), frozen_parameters(module):
            e = call(x)
            torch.autograd.grad(e.sum(), x)

    def chain():
        with _autocast(device, amp):
            if kind == "mala":
                ctrl = StepSizeController(1, init_step=1e-4).to(device)
                run_chain(mala, call, x0, k, None, controller=ctrl, generator=g, freeze=module, **no_check)
            else:
                run_chain(langevin, call, x0, k, 1e-4, final_energy=False, generator=g, freeze=module, **no_check)

    for fn in (floor, chain):  # warm-up
        fn()
    t = _time_blocks({"floor": floor, "chain": chain}, device, args.blocks, args.block_s, args.max_reps)
    out = {"sampler": kind, "chain_steps": k, "passes_per_chain": k + 1 if kind == "mala" else k,
           "floor_ms": t["floor"] * 1e3, "sampler_step_ms": t["chain"] / k * 1e3,
           "sampler_over_floor": (t["chain"] / k) / t["floor"],
           "input_shape": list(x0.shape), "conditioning": sorted(kwargs)}
    if flops_floor is not None:
        out["floor_flops"] = flops_floor
        out["floor_tflops"] = flops_floor / t["floor"] / 1e12
        out["floor_peak_frac"] = out["floor_tflops"] / args.peak_tflops
    return out


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP counts towards "Global" only.
    The tracker's backward hooks raise under ``torch.autograd.grad`` with a leaf input ("A leaf node
    was passed to _will_engine_execute_node ..."), which is what every sampler step does (torch 2.13)."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def count_flops(fn) -> float:
    """FLOPs of ``fn()`` (matmuls, convolutions, attention) by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return float(counter.get_total_flops())


def run_precision(spec: Spec, args, device, amp: bool, box_s: float, data, flops: dict) -> dict:
    """Train-step throughput and the energy measurements of one configuration in one precision."""
    from ebmlab.training.loop import Trainer

    t_start = _now()
    cfg = build_config(spec, args, amp)
    res = {"amp": amp, "batch_size": cfg.train.batch_size}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        trainer = Trainer(cfg, Path(tmp), data=data)
        res["params"] = sum(p.numel() for p in trainer.objective.parameters())
        res["energy_params"] = sum(p.numel() for p in trainer.objective.energy.parameters())
        res["build_s"] = _now() - t_start
        # The probe's Python counters would be guarded by the compiled code (a recompile per call, until dynamo's
        # limit falls back to eager): under --compile there is no probe and no energy measurement.
        probe = None if args.compile else EnergyCalls(trainer.objective.energy, cfg.train.batch_size)
        t0 = _now()
        first = trainer.train_step()  # warm-up 1, with the probe
        _sync(device)
        res["first_step_s"] = _now() - t0
        captured = None
        if probe is not None:
            probe.remove()
            captured = probe.outermost()
        res["first_loss"] = first["loss"]
        if captured is not None:
            res["energy_module"] = type(captured[0]).__name__
            res["energy_calls_per_step"], res["energy_examples_per_step"] = captured[1], captured[2]
        deadline = t_start + box_s
        for _ in range(args.warmup - 1):
            if _now() + res["first_step_s"] > deadline - 0.5 * box_s:  # keep half the box for timing
                break
            trainer.train_step()
        _sync(device)
        t0, n, losses = _now(), 0, []
        while n < args.steps and (n < 1 or _now() < deadline - 0.2 * box_s):
            losses.append(trainer.train_step()["loss"])
            n += 1
        _sync(device)
        elapsed = _now() - t0
        res.update(timed_steps=n, timed_s=elapsed, steps_per_s=n / elapsed, step_ms=elapsed / n * 1e3,
                   losses_finite=all(math.isfinite(v) for v in losses), last_loss=losses[-1])
        if device.type == "cuda":
            res["peak_mem_gib"] = _gib(torch.cuda.max_memory_allocated(device))
            res["peak_reserved_gib"] = _gib(torch.cuda.max_memory_reserved(device))
        if not amp and "step" not in flops and _now() + 3 * res["step_ms"] / 1e3 < deadline + 0.3 * box_s:
            try:  # FLOPs of one whole training step (fp32 run only; the same count serves bf16)
                flops["step"] = count_flops(trainer.train_step)
            except Exception as exc:  # noqa: BLE001 -- recorded, the rest of the row stands
                flops["step_error"] = _err(exc)["error"]
        if flops.get("step"):
            res["step_flops"] = flops["step"]
            res["step_tflops"] = flops["step"] * res["steps_per_s"] / 1e12
            res["step_peak_frac"] = res["step_tflops"] / args.peak_tflops
        if captured is not None:
            try:
                if not amp and "floor" not in flops:
                    module, _, _, (x0, extra, kwargs) = captured

                    def one_floor():
                        from ebmlab.samplers.base import frozen_parameters

                        x = x0.detach().requires_grad_(True)
                        with frozen_parameters(module):
                            torch.autograd.grad(module(x, *extra, **kwargs).sum(), x)

                    flops["floor"] = count_flops(one_floor)
                res["energy"] = measure_energy(cfg, captured, device, amp, args, flops.get("floor"))
            except Exception as exc:  # noqa: BLE001
                res["energy"] = _err(exc)
        res["hours_full_run"] = (spec.run_steps or cfg.train.steps) / res["steps_per_s"] / 3600
        del trainer, captured, probe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    res["wall_s"] = _now() - t_start
    return res


def run_config(spec: Spec, args, device, box_s: float) -> dict:
    from ebmlab.errors import TrainingDiverged
    from ebmlab.training.config import load_config

    row = {"name": spec.name, "config": spec.config, "paper": spec.paper, "overrides": list(spec.overrides),
           "note": spec.note, "status": "ok", "precisions": {}}
    t0 = _now()
    try:
        shipped = load_config(spec.config, list(spec.overrides))
        row.update(method=shipped.method.name, paper_batch_size=shipped.train.batch_size,
                   paper_steps=shipped.train.steps, run_steps=spec.run_steps or shipped.train.steps,
                   sampler=sampler_of(shipped))
        cfg = build_config(spec, args, amp=False)
        row["batch_size"] = cfg.train.batch_size
        data = synthetic_cifar(max(4 * cfg.train.batch_size, 64 if args.cpu_smoke else 2048))
    except Exception as exc:  # noqa: BLE001
        row.update(status="error", **_err(exc))
        return row
    precisions = [False] if device.type != "cuda" or args.no_amp else [False, True]
    if device.type != "cuda":
        row["precisions"]["bf16"] = {"status": "skipped", "reason": "train.amp (bf16 autocast) needs CUDA"}
    elif args.no_amp:
        row["precisions"]["bf16"] = {"status": "skipped", "reason": "--no-amp"}
    flops: dict = {}
    for i, amp in enumerate(precisions):
        key = "bf16" if amp else "fp32"
        share = (box_s - (_now() - t0)) / (len(precisions) - i)
        t_prec = _now()
        try:
            try:
                res = run_precision(spec, args, device, amp, share, data, flops)
            except (FloatingPointError, TrainingDiverged) as exc:
                # Random images and an untrained network can send the paper's long chains off to
                # infinity. The cost of a step does not depend on the step size: time it again with
                # the chains' step sizes divided by 100, and say so.
                smaller = smaller_steps(cfg)
                if not smaller:
                    raise
                first = _err(exc)["error"]
                res = run_precision(dataclasses.replace(spec, overrides=spec.overrides + tuple(smaller)), args,
                                    device, amp, share - (_now() - t_prec), data, flops)
                res["retried"] = {"after": first, "overrides": smaller}
            row["precisions"][key] = {"status": "ok", **res}
        except Exception as exc:  # noqa: BLE001 -- e.g. CUDA out of memory: recorded, the next one runs
            row["precisions"][key] = {"status": "error", **_err(exc)}
            row["status"] = "error"
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if "step_error" in flops:
        row["step_flops_error"] = flops["step_error"]
    row["wall_s"] = _now() - t0
    return row


# ----- report ------------------------------------------------------------------------------------
def _p(row: dict, key: str) -> dict:
    v = row.get("precisions", {}).get(key, {})
    return v if v.get("status") == "ok" else {}


def markdown(result: dict) -> str:
    env, tests = result["env"], result.get("tests", {})
    smoke = result["mode"] == "cpu-smoke"
    lines = [f"# ebmlab GPU check ({result['mode']})", ""]
    if smoke:
        lines += [("**CPU smoke run: networks and chains shrunk to a few channels and steps. These numbers "
                  "check the code path; they are not performance figures.**"), ""]
    gpu = env.get("gpu", "no GPU")
    lines += [f"{result['started']} · {gpu} · torch {env['torch']} (CUDA {env.get('cuda_build')}) · "
              f"bf16 peak assumed {result['peak_tflops']:g} TFLOP/s · wall {result['wall_s']:.0f} s of a "
              f"{result['budget_s']:.0f} s budget" + (" · **train.compile=true**" if result["args"].get("compile")
                                                    else "") + (" · **over budget: later configs skipped**"
                                                    if result.get("budget_exhausted") else ""), ""]
    if env.get("deps_missing"):
        lines += [f"Missing packages: {', '.join(env['deps_missing'])}", ""]
    if tests.get("ran"):
        lines += [f"CUDA tests (`pytest -m cuda tests/cuda`): rc {tests.get('rc')}, "
                  f"{tests.get('passed', '?')} passed, {tests.get('failures', '?')} failed, "
                  f"{tests.get('errors', '?')} errors, {tests.get('skipped', '?')} skipped, "
                  f"{tests.get('wall_s')} s" + (" (TIMED OUT)" if tests.get("timed_out") else "")]
        for f in tests.get("failed_tests", [])[:30]:
            lines.append(f"- FAILED `{f['test']}`: {f['message'][:200]}")
        lines.append("")
    else:
        lines += [f"CUDA tests not run: {tests.get('reason', 'skipped')}", ""]
    lines += [("Steps per second of `Trainer.train_step` on synthetic CIFAR-shaped data (random images in "
              "[-1, 1]), fp32 / bf16 autocast. *sampler/floor*: one sampler step over one bare "
              "forward+backward of the same energy. *energy TFLOP/s*: that forward+backward; *step "
              "TFLOP/s*: a whole training step; % of the bf16 peak. *hours*: the run's steps (train.steps or the spec's) "
              "at the measured rate on one GPU."), "",
              ("| config | method | batch | steps/s | peak GiB | sampler/floor | energy TFLOP/s (% peak) | "
              "step TFLOP/s (% peak) | run steps | hours | status |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["configs"]:
        a, b = _p(row, "fp32"), _p(row, "bf16")
        ea, eb = a.get("energy", {}), b.get("energy", {})

        def tf(d, k, f):
            return f"{_fmt(d.get(k))} ({_fmt(100 * d[f] if d.get(f) is not None else None, '.2g')}%)" if d.get(k) else "-"

        status = row["status"]
        if status == "error":
            errs = [row.get("error")] + [p.get("error") for p in row.get("precisions", {}).values()]
            status = "error: " + "; ".join(e for e in errs if e)[:160]
        elif status == "skipped":
            status = f"skipped: {row.get('reason')}"
        lines.append(
            f"| {row['name']} | {row.get('method', '-')} | {row.get('batch_size', '-')} | "
            f"{_pair(a.get('steps_per_s'), b.get('steps_per_s'))} | "
            f"{_pair(a.get('peak_mem_gib'), b.get('peak_mem_gib'))} | "
            f"{_pair(ea.get('sampler_over_floor'), eb.get('sampler_over_floor'))} | "
            f"{tf(ea, 'floor_tflops', 'floor_peak_frac')} / {tf(eb, 'floor_tflops', 'floor_peak_frac')} | "
            f"{tf(a, 'step_tflops', 'step_peak_frac')} / {tf(b, 'step_tflops', 'step_peak_frac')} | "
            f"{row.get('run_steps', '-')} | {_pair(a.get('hours_full_run'), b.get('hours_full_run'))} | {status} |")
    by_name = {r["name"]: r for r in result["configs"]}
    k5, k100 = by_name.get("paper000_cifar10_cdce", {}), by_name.get("paper000_cifar10_cdce_K100", {})
    total = [(_p(k5, p).get("hours_full_run") or math.nan) + (_p(k100, p).get("hours_full_run") or math.nan)
             for p in ("fp32", "bf16")]
    if k5 and k100:
        lines += ["", f"Paper 000 full run (300k steps: the two paper000 rows added): {_pair(*total)} hours (fp32 / bf16)."]
    lines += ["", "Configurations:"] + [f"- `{r['name']}`: {r.get('note', '')}" for r in result["configs"]]
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:
    result["wall_s"] = _now() - result["_t0"]
    data = {k: v for k, v in result.items() if not k.startswith("_")}
    (out / "gpu_check.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(data), encoding="utf-8")


# ----- main ----------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (default: $OUT if set, else ./gpu_check_out)")
    p.add_argument("--cpu-smoke", action="store_true", help="the same code path on the CPU, tiny (checks, not speed)")
    p.add_argument("--budget-s", type=float, default=None, help="total wall-time budget (default 480; smoke 120)")
    p.add_argument("--tests-budget-s", type=float, default=240.0, help="at most this much for the CUDA tests (default 240)")
    p.add_argument("--test-workers", type=int, default=0,
                   help="pytest-xdist processes for the CUDA tests, sharing the GPU (default 0: one process)")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda tests/cuda")
    p.add_argument("--configs", help="comma-separated subset of: " + ", ".join(s.name for s in CONFIGS))
    p.add_argument("--steps", type=int, default=None, help="timed training steps per precision (default 20; smoke 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed training steps first (default 3; smoke 1)")
    p.add_argument("--chain-steps", type=int, default=None, help="K of the timed sampler chain (default 10; smoke 2)")
    p.add_argument("--blocks", type=int, default=None, help="interleaved timing blocks (default 3; smoke 1)")
    p.add_argument("--block-s", type=float, default=None, help="seconds per timing block and item (default 0.3)")
    p.add_argument("--max-reps", type=int, default=50, help="calls per timing block at most")
    p.add_argument("--min-config-s", type=float, default=None, help="skip a config with less left (default 25)")
    p.add_argument("--no-amp", action="store_true", help="fp32 only")
    p.add_argument("--compile", action="store_true",
                   help="train.compile=true (inductor) for every config: compare steps/s with a run without it; "
                        "the first step's time (first_step_s) includes the compilation")
    p.add_argument("--peak-tflops", type=float, default=PEAK_BF16_TFLOPS, help="bf16 peak for the %% columns")
    p.add_argument("--smoke-batch", type=int, default=4, help="batch size of --cpu-smoke")
    a = p.parse_args(argv)
    smoke = a.cpu_smoke
    defaults = {"budget_s": 120.0 if smoke else 480.0, "steps": 1 if smoke else 20, "warmup": 1 if smoke else 3,
                "chain_steps": 2 if smoke else 10, "blocks": 1 if smoke else 3, "block_s": 0.0 if smoke else 0.3,
                "min_config_s": 0.0 if smoke else 25.0}
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.device = "cpu" if smoke else "cuda"
    a.max_reps = 1 if smoke else a.max_reps
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = _now()
    out = Path(args.out or os.environ.get("OUT") or "gpu_check_out")
    out.mkdir(parents=True, exist_ok=True)
    if args.cpu_smoke:
        torch.set_num_threads(1)
    device = torch.device(args.device)
    specs = CONFIGS if not args.configs else [s for s in CONFIGS if s.name in args.configs.split(",")]
    result = {"schema": SCHEMA, "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "budget_s": args.budget_s, "peak_tflops": args.peak_tflops, "args": vars(args),
              "env": environment(device), "tests": {"ran": False, "reason": "--skip-tests"}, "configs": [],
              "_t0": t0}
    if device.type == "cuda" and not torch.cuda.is_available():
        result["error"] = "no CUDA device (torch.cuda.is_available() is False); use --cpu-smoke on a CPU machine"
        result["configs"] = [{"name": s.name, "config": s.config, "paper": s.paper, "note": s.note,
                              "status": "skipped", "reason": "no CUDA device"} for s in specs]
        write(result, out)
        print(result["error"], file=sys.stderr)
        return 2
    deadline = t0 + args.budget_s
    if not args.skip_tests:
        print(f"gpu_check: running the CUDA tests (at most {args.tests_budget_s:.0f} s) ...", flush=True)
        result["tests"] = run_tests(out, min(args.tests_budget_s, 0.5 * args.budget_s), args.cpu_smoke,
                                    args.test_workers)
        t = result["tests"]
        print(f"gpu_check: tests rc={t.get('rc')} passed={t.get('passed')} failed={t.get('failures')} "
              f"errors={t.get('errors')} skipped={t.get('skipped')} ({t.get('wall_s')} s)", flush=True)
        write(result, out)
    for i, spec in enumerate(specs):
        left = deadline - _now()
        if left < args.min_config_s or left <= 0:
            result["budget_exhausted"] = True
            result["configs"].append({"name": spec.name, "config": spec.config, "paper": spec.paper, "note": spec.note,
                                      "status": "skipped", "reason": f"time budget ({left:.0f} s left)"})
            continue
        box = left / (len(specs) - i)
        print(f"gpu_check: {spec.name} ({box:.0f} s box) ...", flush=True)
        row = run_config(spec, args, device, box)
        result["configs"].append(row)
        a = _p(row, "fp32")
        print(f"gpu_check: {spec.name}: {row['status']}, {_fmt(a.get('steps_per_s'))} steps/s fp32, "
              f"{row.get('wall_s', 0):.1f} s", flush=True)
        write(result, out)
    write(result, out)
    print(f"gpu_check: wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} "
          f"({result['wall_s']:.0f} s)", flush=True)
    failed_tests = result["tests"].get("ran") and result["tests"].get("rc") not in (0, 5)
    failed_cfg = any(r["status"] == "error" for r in result["configs"])
    return 1 if failed_tests or failed_cfg else 0


if __name__ == "__main__":
    sys.exit(main())
