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
   passes and K input-gradient backward passes per step (``torch.autograd.grad(E, x)``); paper
   001's KL term differentiates through those passes and paper 002's gradient penalty through
   dE/dx (``create_graph=True``); paper 003 trains two networks (EBM and initializer). Wrapped in DDP,
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
2. Objectives must return the loss and never call ``backward()``, an optimizer or collectives
   themselves; every rank reaches the step's collectives (``sync_network_buffers`` before the
   forward, ``nonfinite_loss``, ``average_gradients``) exactly once per step (the loop guarantees
   it), so a non-finite loss on one rank stops every rank at the same step with the same message.
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
   the sampler buffers (replay banks, time buffers, step-size controllers) are rank-local and
   differ between ranks. Chain noise uses a per-rank objective generator. Buffers *inside the
   networks* (children of the objective that own parameters: spectral-norm vectors, which start
   random) are not sampler state: ``sync_network_buffers`` copies rank 0's before every forward,
   as DDP's ``broadcast_buffers`` does, so every rank evaluates the same function.
5. Checkpoints (``training/dist_checkpoint.py`` has the order of writes): rank 0 alone writes the shared
   ``step_N.safetensors`` (parameters, EMA, optimizer, rank 0's buffers/RNG: ``ebmlab sample``/``eval`` and a
   1-process resume of rank 0 work as usual); every rank r writes ``step_N.rank{r}.safetensors`` (its buffers,
   RNG states and the SHA-256 of its parameters), after ``verify_replicas`` found the parameters bit-identical.
   Resume needs the same world size and every rank's own file (a rank that cannot restore stops every rank:
   ``every_rank``); the run directory must be on a filesystem every node sees.
6. Logging: metrics are averaged over ranks (``average_metrics``) before rank 0 logs them; only
   rank 0 writes logs, plots, samples, checkpoints and the final evaluation.
7. Backends: NCCL when the device is CUDA (each process takes ``cuda:LOCAL_RANK``), gloo on CPU.

Device-side options (also here, because they are launch/performance settings, not methods):
``train.amp`` = bf16 autocast of the objective's forward (sampler included) on CUDA only;
``train.compile`` = ``torch.compile`` of the energy module in place (state-dict keys unchanged).
Limitations: MALA's accept/reject uses energy differences, which bf16 resolves to ~3 significant
digits, so prefer Langevin with ``amp``. torch.compile does not support double backward, so it
cannot train objectives that differentiate dE/dx (paper 001's KL term, paper 002's gradient
penalty): the first step raises a ``ConfigError`` saying so (``compile_errors``).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ebmlab.errors import ConfigError, DistributedError


@dataclass(frozen=True)
class DistContext:
    """The process group as training sees it: rank, world size, device (a single process is rank 0 of 1)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 -- immutable
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes files)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op on a single process)."""
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
    if world > 1 and device.type == "mps":  # gloo carries CPU tensors only, and MPS has no float64 (devices.py)
        raise ConfigError("train.device=mps runs in one process; torchrun started several: train on the CPU "
                          "(train.device=cpu) or on CUDA GPUs with torchrun")
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
    """Destroy the process group, if one was created."""
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = None


def _attempt(fn) -> Exception | None:  # the exception fn() raises, or None
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 -- re-raised on every rank by the callers
        return exc
    return None


def main_first(ctx: DistContext, fn) -> None:
    """Run ``fn`` on rank 0 only (e.g. preparing the run directory); every rank then raises the
    exception rank 0 raised, so that a user error stops all processes with the same message."""
    err = _attempt(fn) if ctx.is_main else None
    if ctx.enabled:
        box = [err]
        dist.broadcast_object_list(box, src=0)  # our own processes only; never user data
        err = box[0]
    if err is not None:
        raise err


def every_rank(ctx: DistContext, fn) -> None:
    """Run ``fn`` on every rank (e.g. reading its rank file); when one raises, every rank raises (its own exception,
    else the lowest failing rank's): none goes on to write the run's files, or waits in a collective, after one refused."""
    err = _attempt(fn)
    if ctx.enabled:
        errs = [None] * ctx.world_size
        dist.all_gather_object(errs, err)  # our own processes only; never user data
        err = err or next((e for e in errs if e is not None), None)
    if err is not None:
        raise err


# ----- seeds and data ---------------------------------------------------------------------------
def restore_generator(g: torch.Generator, state: torch.Tensor, seed: int, step: int) -> bool:
    """Set ``g`` to a saved ``state``. A state saved on the other device kind cannot be carried over
    (a CUDA generator's state is 16 bytes, a CPU one's 5,056): a ``train.device=auto`` run moved
    between a GPU and a CPU machine then continues with ``g`` reseeded from (seed, step) — reproducible,
    but not bit-identical to an uninterrupted run — and a warning says so. Returns whether it was exact."""
    try:
        g.set_state(state)
        return True
    except RuntimeError:
        g.manual_seed(derive_seed(seed, 0, 1000 + step))
        print(f"ebmlab: warning: the checkpoint's sampler random state was saved on another device kind; "
              f"continuing from step {step} with a fresh stream (the losses will differ from an "
              "uninterrupted run)", file=sys.stderr)
        return False


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
def _by_dtype(tensors: list[torch.Tensor]) -> dict[torch.dtype, list[torch.Tensor]]:
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return groups


@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters to every rank (sampler buffers stay rank-local, rule 4)."""
    if ctx.enabled:
        for p in module.parameters():
            dist.broadcast(p.data, src=0)


def network_buffers(objective: torch.nn.Module) -> list[torch.Tensor]:
    """Buffers inside the trainable networks (rule 4): those of the objective's children that own
    parameters, e.g. spectral-norm power-iteration vectors. Sampler state (replay banks, time buffers,
    step-size controllers) lives in parameter-free children or on the objective itself."""
    out: list[torch.Tensor] = []
    for child in objective.children():
        if next(child.parameters(), None) is not None:
            out += list(child.buffers())
    return out


@torch.no_grad()
def sync_network_buffers(objective: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's network buffers to every rank, once per step before the forward pass (what
    DDP's ``broadcast_buffers=True`` does): one broadcast of a flat buffer per dtype; none without
    network buffers (plain MLPs)."""
    if not ctx.enabled:
        return
    for group in _by_dtype(network_buffers(objective)).values():
        flat = torch.cat([b.reshape(-1) for b in group])  # (sum numel,)
        dist.broadcast(flat, src=0)
        offset = 0
        for b in group:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()


def nonfinite_loss(loss: torch.Tensor, ctx: DistContext) -> str | None:
    """None when the loss is finite on every rank, else what to report (e.g. ``nan`` or
    ``rank 1: nan``). Collective on several processes, so that every rank stops at the same step."""
    value = float(loss.detach())
    if not ctx.enabled:
        return None if math.isfinite(value) else f"{value}"
    values = torch.zeros(ctx.world_size, dtype=torch.float64, device=ctx.device)  # (world,)
    values[ctx.rank] = value
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    bad = [f"rank {r}: {v}" for r, v in enumerate(values.tolist()) if not math.isfinite(v)]
    return ", ".join(bad) if bad else None


@torch.no_grad()
def average_gradients(params: list[torch.Tensor], ctx: DistContext) -> None:
    """All-reduce-average the gradients of ``params`` (rule 1): one flat buffer per dtype holding
    every gradient (zeros where this rank has none) and one 'has a gradient' count per parameter.
    A parameter no rank produced a gradient for keeps ``grad=None`` (the optimizer skips it)."""
    if not ctx.enabled:
        return
    for dtype, group in _by_dtype(params).items():
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


# ----- device-side options: bf16 autocast and torch.compile -------------------------------------
def check_device_options(tc, device: torch.device) -> None:
    """``ConfigError`` for device options the device cannot honour (``train.amp`` off CUDA)."""
    if tc.amp and device.type != "cuda":
        raise ConfigError(f"train.amp (bf16 autocast) needs a CUDA device, but training runs on {device}; "
                          "set train.amp=false")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``train.amp``; a no-op context otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


COMPILE_BACKEND = "inductor"  # torch.compile's default; the tests use "aot_eager" (no C++ build)


def compile_energy(objective: torch.nn.Module) -> None:
    """``torch.compile`` the energy in place (``nn.Module.compile``), so state-dict keys do not change.
    (In-place compilation needs the energy to be an ebmlab module: dynamo does not trace a bare
    ``nn.Sequential`` compiled this way; every ebmlab energy is its own class.)"""
    energy = getattr(objective, "energy", None)
    if not isinstance(energy, torch.nn.Module):
        raise ConfigError("train.compile needs an objective with an `energy` module")
    energy.compile(backend=COMPILE_BACKEND)


@contextlib.contextmanager
def compile_errors(enabled: bool):
    """Turn torch.compile's refusals of double backward into a one-sentence ``ConfigError`` (torch
    says "does not currently support double backward" or, for a Langevin step with
    ``create_graph=True``, "non-empty donated buffers which requires create_graph=False")."""
    try:
        yield
    except RuntimeError as exc:
        if enabled and ("double backward" in str(exc) or "donated buffers" in str(exc)):
            raise ConfigError("train.compile=true cannot train this objective: its loss differentiates through "
                              "dE/dx (double backward, e.g. paper 001's KL term or paper 002's gradient "
                              "penalty), which torch.compile does not support; set train.compile=false") from None
        raise
