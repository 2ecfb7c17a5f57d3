"""Rank-local checkpoint state of a run trained on several processes (issue 8, rule 5 of
``training/distributed.py``).

Next to the shared ``step_N.safetensors`` (parameters, EMA, optimizer, rank 0's buffers and RNGs;
written by rank 0 alone) every rank r writes ``step_N.rank{r}.safetensors`` with its rank-local
tensors: the objective's non-parameter state (replay banks, time buffers, step-size controllers)
and its RNG states, plus the SHA-256 of its parameters, the rank, the world size and the step in the
file's metadata (one key, ``rank_state``, holding them as sorted JSON: safetensors writes several keys
in a random order, and identical runs must write identical files). Resume refuses a rank file of
another step or of other parameters (another run's), and a rank that cannot restore its state stops
every rank (``distributed.every_rank``) before rank 0 records anything. Order: ``verify_replicas`` (collective), every rank writes its file, barrier, rank 0
writes the shared file (its sidecar, written last, marks the checkpoint complete), barrier. Resume
loads the shared file on every rank, then this rank's file; the world size must be the same.
On one process nothing is written or read here, but ``restore_rank_state`` still refuses a checkpoint
written by several processes (its world size must be 1).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load, save_file

from ebmlab.errors import DistributedError
from ebmlab.training import checkpoint as ckpt
from ebmlab.training.distributed import DistContext, restore_generator, verify_replicas

_RANK_FILE = re.compile(r"^step_(\d{8})\.rank(\d+)\.safetensors$")
_STATE = "rank_state"  # the rank file's one metadata key (sorted JSON: rank, world_size, step, params_sha256)


def rank_file(ckpt_dir: Path, step: int, rank: int) -> Path:
    """The path of rank ``rank``'s state at ``step`` (``step_NNNNNNNN.rankR.safetensors``)."""
    return Path(ckpt_dir) / f"step_{step:08d}.rank{rank}.safetensors"


def params_digest(module: torch.nn.Module) -> str:
    """SHA-256 of the parameters in ``named_parameters`` order (stored in every rank file)."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    """Load rank-local buffers (``model.*`` entries that are not parameters) into the trainer's objective."""
    buffers = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    unexpected = trainer.objective.load_state_dict(buffers, strict=False).unexpected_keys
    if unexpected:
        raise ckpt.CheckpointError(f"rank checkpoint holds state the objective does not have: {unexpected[:5]}")
    trainer.g_data.set_state(tensors["rng.data"])
    restore_generator(trainer.g_obj, tensors["rng.objective"], trainer.cfg.train.seed, trainer.step)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)


def save_rank_state(trainer) -> None:
    """Every rank writes its rank file for ``trainer.step``; then a barrier (several processes only)."""
    ctx = trainer.dist
    if not ctx.enabled:
        return
    verify_replicas(trainer.objective, ctx)
    path = rank_file(trainer.run_dir / "checkpoints", trainer.step, ctx.rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in local_state(trainer).items()}
    meta = {_STATE: json.dumps({"rank": str(ctx.rank), "world_size": str(ctx.world_size), "step": str(trainer.step),
                                "params_sha256": params_digest(trainer.objective)}, sort_keys=True)}
    ckpt._atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
    ctx.barrier()


def read_rank_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a rank file; refuses anything that is not safetensors."""
    if not Path(path).is_file():
        raise ckpt.CheckpointError(f"rank checkpoint {str(path)!r} is missing; resume with the same number of "
                                   "processes on a filesystem every node sees")
    try:
        data = Path(path).read_bytes()  # in memory, not mapped (checkpoint.load_checkpoint: Windows)
        head = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        meta = dict(head.get("__metadata__") or {})
        meta = json.loads(meta[_STATE]) if _STATE in meta else meta  # (files before rank_state: the keys themselves)
        if not isinstance(meta, dict):
            raise ValueError(f"its {_STATE!r} metadata is not a JSON object")
        return load(data), meta
    except Exception as exc:  # noqa: BLE001 -- safetensors raises several types for malformed files
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
    path = rank_file(trainer.run_dir / "checkpoints", trainer.step, ctx.rank)
    tensors, info = read_rank_file(path)
    if str(info.get("step")) != str(trainer.step):
        raise ckpt.CheckpointError(f"rank file of rank {ctx.rank} is for step {info.get('step')}, not {trainer.step}")
    digest = info.get("params_sha256")
    if digest is not None and digest != params_digest(trainer.objective):
        raise ckpt.CheckpointError(f"rank checkpoint {str(path)!r} was written with other parameters than "
                                   f"step_{trainer.step:08d}.safetensors (another run's file?); {ckpt.RESUME_ADVICE}, "
                                   "with every rank's file of that step")
    load_local_state(trainer, tensors)
