"""Training on several processes (GPUs, nodes) launched by PyTorch's ``torchrun``.

    torchrun --standalone --nproc_per_node N -m ebmlab train ...         # one node
    torchrun --nnodes M --nproc_per_node N --node_rank K --rdzv_backend c10d \
             --rdzv_endpoint HOST:PORT --rdzv_id RUN -m ebmlab train ...  # several nodes

Issue 8; see ``docs/distributed.md`` for the user-facing commands. Everything here is a no-op on
one process (``WORLD_SIZE`` unset or 1), so single-process runs are bit-for-bit what they were.

DESIGN RULES (read before writing an objective that should train on several processes)
=====================================================================================

1. No DistributedDataParallel wrapper. Gradients are averaged explicitly, once per step, by
   ``average_gradients`` right after ``loss.backward()`` in the training loop: one all-reduce (SUM)
   of all parameter gradients flattened into one buffer per dtype, divided by the world size.
   That is exactly DDP's averaging (DDP also sums and divides by the world size, and treats a
   parameter without a gradient on some rank as a zero contribution); it is *not* an approximation.
   Why not DDP: an EBM objective's ``forward`` runs the sampler internally, i.e. K extra forward
   passes and K input-gradient backward passes per step (``torch.autograd.grad(E, x)``), and
   papers 001/003 differentiate through those passes (``create_graph=True``). Wrapped in DDP,
   every sampler pass of a wrapped module prepares DDP's reducer for a backward that synchronises
   gradients, so the sampler would have to call the unwrapped module or run under ``no_sync()``,
   and objectives that use a parameter on one rank but not another (random restarts, two
   networks) would need ``find_unused_parameters=True``. With the explicit all-reduce, none of
   that can go wrong: the sampler's passes never communicate, whatever the objective does
   internally, and the modules stay unwrapped (state-dict keys, EMA, ``objective.energy`` and
   checkpoints are identical for 1 and N processes). What we give up is DDP's overlap of the
   all-reduce with the loss backward; in an EBM step that backward is one pass out of ~2K+2
   (the K sampler steps dominate), so the overlap would hide little.
   If someone ever does wrap a module in DDP (e.g. for very large image energies), the rule is:
   sampling (Langevin/MALA passes, ``sample``) must call the *unwrapped* module or run inside
   ``ddp.no_sync()``; only the final loss may go through the wrapper.
2. Objectives must return the loss and never call ``backward()`` or collectives themselves; every
   rank reaches ``average_gradients`` exactly once per step (the loop guarantees it).
3. Batches: ``train.batch_size`` is the *per-rank* batch B; the global batch is B * world_size.
   All ranks share the data generator (seed + 1) and draw the same global index vector of length
   B * world_size; rank r keeps positions [r*B, (r+1)*B) (``shard``), so the ranks' shards are
   disjoint and an N-process run sees exactly the batches of a 1-process run with batch N*B.
   For a loss that is a mean over the batch the averaged gradient then equals the 1-process
   gradient (up to float summation order); losses using batch statistics (e.g. paper 004's RMS
   adaptive step) are per-rank statistics, as with DDP.
4. Randomness: one seed per rank, derived from ``train.seed`` (``derive_seed``). Rank 0 uses
   exactly the single-process seeds. The objective (its networks and buffers) is built under the
   rank's seed, then the *parameters* are broadcast from rank 0, so the networks are identical and
   the buffers (replay banks, time buffers, sampler step-size controllers) are rank-local and
   differ between ranks. Chain noise uses a per-rank objective generator.
5. Checkpoints: only rank 0 writes the shared ``step_N.safetensors`` (parameters, EMA, optimizer,
   and rank 0's own buffers/RNG, so ``ebmlab sample``/``eval`` and 1-process resume of rank 0 work
   as usual). Every rank r writes ``step_N.rank{r}.safetensors`` with its rank-local state (objective
   buffers and RNG states) and the SHA-256 of its parameters in the file's metadata. Order: all
   rank files, barrier, rank 0 writes the shared file (its sidecar, written last, marks the
   checkpoint complete), barrier. Before saving, ``verify_replicas`` checks that the parameters
   are bit-identical on all ranks and raises otherwise. Resume needs the same world size (checked)
   and restores every rank's state; the run directory must be on a filesystem every node sees.
6. Logging: metrics are averaged over ranks (``average_metrics``) before rank 0 logs them; only
   rank 0 writes logs, plots, samples, checkpoints and the final evaluation.
7. Backends: NCCL when the device is CUDA (each process takes ``cuda:LOCAL_RANK``), gloo on CPU.

Device-side options (also here, because they are launch/performance settings, not methods):
``train.amp`` = bf16 autocast of the objective's forward (sampler included) on CUDA only;
``train.compile`` = ``torch.compile`` of the energy module in place (state-dict keys unchanged).
Limitations: MALA's accept/reject uses energy differences, which bf16 resolves to ~3 significant
digits, so prefer Langevin with ``amp``; torch.compile does not support double backward, so it
cannot be combined with objectives that differentiate through sampling (paper 001's KL term).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from ebmlab.training import checkpoint as ckpt
from ebmlab.training.config import ConfigError


class DistributedError(RuntimeError):
    """Ranks disagree (parameters, checkpoints, metric keys) or the launch environment is wrong."""


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()


_CONTEXT: DistContext | None = None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer; launch with torchrun") from None


def env_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment variables (0, 1, 0 when absent)."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent; launch with torchrun")
    return rank, world, local


def rank_device(device: torch.device, world: int, local_rank: int) -> torch.device:
    """The resolved ``train.device`` for this process: CUDA runs take ``cuda:LOCAL_RANK``."""
    if world == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(f"train.device={str(device)!r} names one GPU but torchrun started several processes; "
                          "use train.device=auto or cuda (each process takes cuda:LOCAL_RANK)")
    if local_rank >= torch.cuda.device_count():
        raise DistributedError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                               "set --nproc_per_node to at most the number of GPUs")
    return torch.device("cuda", local_rank)


def setup(device: torch.device) -> DistContext:
    """This process's context; initialises the process group once (NCCL on CUDA, gloo on CPU)."""
    global _CONTEXT
    rank, world, local = env_ranks()
    device = rank_device(device, world, local)
    if world == 1:
        return DistContext(device=device)  # nothing to initialise; the device may differ per Trainer
    if _CONTEXT is not None:
        if _CONTEXT.device != device:
            raise DistributedError(f"the process group was set up for {_CONTEXT.device}, not {device}")
        return _CONTEXT
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # torchrun exported MASTER_ADDR/MASTER_PORT for env://
        dist.init_process_group(backend=backend, init_method="env://")
    _CONTEXT = DistContext(rank, world, local, device, backend)
    return _CONTEXT


def teardown() -> None:
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = None


def main_first(ctx: DistContext, fn) -> None:
    """Run ``fn`` on rank 0 only (e.g. preparing the run directory); every rank then raises the
    exception rank 0 raised, so that a user error stops all processes with the same message."""
    err = None
    if ctx.is_main:
        try:
            fn()
        except Exception as exc:  # re-raised below on every rank
            err = exc
    if ctx.enabled:
        box = [err]
        dist.broadcast_object_list(box, src=0)  # our own processes only; never user data
        err = box[0]
    if err is not None:
        raise err


# ----- seeds and data ---------------------------------------------------------------------------
def derive_seed(seed: int, rank: int, stream: int = 0) -> int:
    """Seed of random stream ``stream`` on ``rank``: rank 0 keeps the single-process seed
    ``seed + stream``; other ranks get a 63-bit hash of (seed, rank, stream), independent streams."""
    if rank == 0:
        return seed + stream
    digest = hashlib.sha256(f"ebmlab:{seed}:{rank}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def shard(global_idx: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's disjoint slice [r*B, (r+1)*B) of the global (B * world_size,) index vector."""
    b = global_idx.shape[0] // ctx.world_size
    return global_idx[ctx.rank * b:(ctx.rank + 1) * b]


# ----- parameters and gradients -----------------------------------------------------------------
@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters to every rank (buffers stay rank-local, rule 4)."""
    if ctx.enabled:
        for p in module.parameters():
            dist.broadcast(p.data, src=0)


@torch.no_grad()
def average_gradients(params: list[torch.Tensor], ctx: DistContext) -> None:
    """All-reduce-average the gradients of ``params`` (rule 1): one flat buffer per dtype holding
    every gradient (zeros where this rank has none) and one 'has a gradient' count per parameter.
    A parameter no rank produced a gradient for keeps ``grad=None`` (the optimizer skips it)."""
    if not ctx.enabled:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for dtype, group in by_dtype.items():
        flats = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in group]
        has = torch.tensor([float(p.grad is not None) for p in group], dtype=dtype, device=group[0].device)
        buf = torch.cat(flats + [has])  # (sum numel + P,)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        counts, offset = buf[-len(group):], 0
        for p, count in zip(group, counts.tolist()):
            n = p.numel()
            if count > 0:
                mean = (buf[offset:offset + n] / ctx.world_size).view_as(p)
                if p.grad is None:
                    p.grad = mean.clone()
                else:
                    p.grad.copy_(mean)
            offset += n


def _flat_params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in module.parameters()])


@torch.no_grad()
def verify_replicas(module: torch.nn.Module, ctx: DistContext) -> None:
    """Raise ``DistributedError`` unless the parameters are bit-identical on every rank."""
    if not ctx.enabled:
        return
    flat = _flat_params(module)
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    diff = float((hi - lo).abs().max()) if flat.numel() else 0.0
    if diff != 0.0:
        raise DistributedError(f"parameters differ across ranks (max |difference| {diff:.3g}); the gradient "
                               "averaging was bypassed (an objective must not step its own optimizer)")


def params_digest(module: torch.nn.Module) -> str:
    """SHA-256 of the parameters in ``named_parameters`` order (stored in every rank file)."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def average_metrics(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Mean of each logged scalar over ranks (rule 6); all ranks must log the same keys."""
    if not ctx.enabled:
        return values
    keys = sorted(values)
    key_sum = float(zlib.crc32("\n".join(keys).encode()))
    t = torch.tensor([values[k] for k in keys] + [key_sum, -key_sum], dtype=torch.float64, device=ctx.device)
    check = t[-2:].clone()
    dist.all_reduce(check, op=dist.ReduceOp.MAX)
    if float(check[0]) != -float(check[1]):
        raise DistributedError("ranks logged different metric names; an objective's metrics must not depend on "
                               "the rank")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, t[:-2].tolist())}


# ----- rank-local checkpoint state --------------------------------------------------------------
_RANK_FILE = re.compile(r"^step_(\d{8})\.rank(\d+)\.safetensors$")


def rank_file(ckpt_dir: Path, step: int, rank: int) -> Path:
    return Path(ckpt_dir) / f"step_{step:08d}.rank{rank}.safetensors"


def local_state(trainer) -> dict[str, torch.Tensor]:
    """Rank-local tensors: objective buffers (state-dict entries that are not parameters) and RNGs."""
    params = {k for k, _ in trainer.objective.named_parameters(remove_duplicate=False)}
    out = {f"model.{k}": v for k, v in trainer.objective.state_dict().items() if k not in params}
    out["rng.data"] = trainer.g_data.get_state()
    out["rng.objective"] = trainer.g_obj.get_state()
    out["rng.torch"] = torch.get_rng_state()
    if trainer.device.type == "cuda":
        out["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    return out


def load_local_state(trainer, tensors: dict[str, torch.Tensor]) -> None:
    buffers = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    missing = trainer.objective.load_state_dict(buffers, strict=False).unexpected_keys
    if missing:
        raise ckpt.CheckpointError(f"rank checkpoint holds state the objective does not have: {missing[:5]}")
    trainer.g_data.set_state(tensors["rng.data"])
    trainer.g_obj.set_state(tensors["rng.objective"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)


def save_rank_state(trainer) -> None:
    """Every rank writes its rank file for ``trainer.step`` (rule 5); then a barrier."""
    ctx = trainer.dist
    if not ctx.enabled:
        return
    verify_replicas(trainer.objective, ctx)
    path = rank_file(trainer.run_dir / "checkpoints", trainer.step, ctx.rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in local_state(trainer).items()}
    meta = {"rank": str(ctx.rank), "world_size": str(ctx.world_size), "step": str(trainer.step),
            "params_sha256": params_digest(trainer.objective)}
    ckpt._atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
    ctx.barrier()


def read_rank_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a rank file; refuses anything that is not safetensors."""
    if not Path(path).is_file():
        raise ckpt.CheckpointError(f"rank checkpoint {str(path)!r} is missing; resume with the same number of "
                                   "processes on a filesystem every node sees")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises several types for malformed files
        raise ckpt.CheckpointError(f"rank checkpoint {str(path)!r} could not be read as safetensors: {exc}") from None


def prune_rank_files(ckpt_dir: Path) -> None:
    """Delete rank files whose shared checkpoint no longer exists (after ``ckpt.prune``)."""
    kept = {step for step, _ in ckpt.list_checkpoints(ckpt_dir)}
    for p in Path(ckpt_dir).iterdir() if Path(ckpt_dir).is_dir() else []:
        m = _RANK_FILE.match(p.name)
        if m and int(m.group(1)) not in kept:
            p.unlink(missing_ok=True)


def agree_on_checkpoint(path: Path | None, ctx: DistContext) -> None:
    """Raise unless every rank found the same latest checkpoint (shared filesystem check)."""
    if not ctx.enabled:
        return
    step = -1 if path is None else int(Path(path).name[5:13])
    t = torch.tensor([step, -step], dtype=torch.long, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise DistributedError("ranks found different latest checkpoints; the run directory must be on a "
                               "filesystem that every node sees")


def restore_rank_state(trainer, meta: dict) -> None:
    """After the shared checkpoint is loaded: check the world size and load this rank's file."""
    ctx, saved = trainer.dist, int(meta.get("world_size", 1))
    if saved != ctx.world_size:
        raise ckpt.CheckpointError(f"the checkpoint was written by {saved} process(es) but this run has "
                                   f"{ctx.world_size}; resume with --nproc_per_node/--nnodes giving {saved}")
    if not ctx.enabled:
        return
    tensors, info = read_rank_file(rank_file(trainer.run_dir / "checkpoints", trainer.step, ctx.rank))
    if int(info.get("step", -1)) != trainer.step:
        raise ckpt.CheckpointError(f"rank file of rank {ctx.rank} is for step {info.get('step')}, not {trainer.step}")
    load_local_state(trainer, tensors)


# ----- device-side options: bf16 autocast and torch.compile -------------------------------------
def check_device_options(tc, device: torch.device) -> None:
    if tc.amp and device.type != "cuda":
        raise ConfigError(f"train.amp (bf16 autocast) needs a CUDA device, but training runs on {device}; "
                          "set train.amp=false")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``train.amp``; a no-op context otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_energy(objective: torch.nn.Module) -> None:
    """``torch.compile`` the energy in place (``nn.Module.compile``), so state-dict keys do not change."""
    energy = getattr(objective, "energy", None)
    if not isinstance(energy, torch.nn.Module):
        raise ConfigError("train.compile needs an objective with an `energy` module")
    energy.compile()
