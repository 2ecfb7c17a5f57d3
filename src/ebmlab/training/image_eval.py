"""Image-run evaluation, sample grids during training, and the ``ebmlab eval`` image/OOD options.

This module only defines functions (it imports neither ``training/evaluate.py`` nor
``training/hooks.py``); those two build their lists from it:

- ``IMAGE_EVALUATORS``: ``evaluate_images`` draws ``eval.n_samples`` samples with the method's own
  ``objective.sample`` (in batches of ``train.batch_size``), writes ``samples/samples.npy`` (data
  coordinates, before clamping) and ``samples/grid_final.png``, and reports
  ``sample_out_of_range`` (fraction of pixel values outside [-1, 1]; the metrics then clamp to
  [-1, 1], as saving an image file would), on digits runs with ``eval.digits_fd`` the digits
  feature distance with its floor and noise ceiling and the classifier scores
  (``metrics/digits.py``), nearest-neighbour novelty (``metrics/novelty.py``, paper 004 Sec. 4.2.4;
  every image dataset, ``plots/novelty.png``), and ``plots/energy_hist.png`` (held-out data vs
  samples, paper 004 Fig. 5).
- ``SAMPLE_HOOKS``: ``grid_hook`` writes ``samples/grid_stepNNNNNN.png`` every ``train.sample_every``
  steps with the EMA weights (``scatter_hook`` the scatter ``samples/scatter_stepNNNNNN.png`` for vector
  runs), each also a TensorBoard image; every figure starts from the same noise (seed
  ``train.seed + 13``) so the figures of a run are comparable. At the end (``final=True``) the caller has already swapped the EMA
  weights in (``evaluate.final_evaluation``), so the hook does not swap them again.
- ``EVAL_EXTENSIONS``: ``--fid`` (FID of the samples vs the test split with the in-house InceptionV3,
  Inception Score of samples and of the test split), ``--digits-fd`` (the digits metrics when the
  config did not already compute them), ``--ood NAME`` (AUROC of -energy, held-out data vs the OOD
  set; images via ``data.image_ood.load_ood_set``, vectors ``shifted`` = held-out + 1 in every model
  coordinate, ``scaled`` = held-out x 1.5 about the model origin (model coordinates: standard deviations
  about the training mean with ``data.standardize``, whitened with ``data.whiten``, the data's own units and
  origin without), or a .npy/.npz/.csv file of vectors). The extensions reuse the
  ``samples/samples.npy`` that ``evaluate`` has just written in the same ``ebmlab eval`` command.
"""
from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor

from ebmlab import plots
from ebmlab.data.pixels import Pixels
from ebmlab.files import save_npy_atomic
from ebmlab.errors import ConfigError

GRID_N = 64


# ----- sampling ------------------------------------------------------------------------------------
def draw_samples(objective, n: int, generator, batch_size: int, progress: bool = False) -> Tensor:
    """(n, C, H, W) samples in model coordinates, on CPU, drawn in batches with one generator; ``progress``
    (``train.progress``): a bar over the sampler steps (plain lines after 30 s where stderr is a file or a pipe)."""
    from ebmlab.training.drawing import draw

    x = draw(objective, n, generator, batch_size=batch_size, progress=None if progress else False).x.detach().cpu()
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{int((~torch.isfinite(x)).flatten(1).any(1).sum())} of {n} samples are not finite")
    return x


@torch.no_grad()
def energies(objective, x: Tensor, batch_size: int = 500) -> Tensor:
    """(N,) energies of model-coordinate inputs, on CPU."""
    dev = next(objective.parameters()).device
    e = torch.cat([objective.score(x[i:i + batch_size].to(dev)).detach().cpu() for i in range(0, len(x), batch_size)])
    if not torch.isfinite(e).all():
        raise FloatingPointError("the energy is not finite on some inputs")
    return e


# ----- evaluation at the end of training / ebmlab eval -----------------------------------------------
def evaluate_images(objective, data, cfg, run_dir: Path | None, generator) -> dict:
    """Image-run metrics and outputs (see the module docstring); {} for vector data."""
    if data.kind != "image":
        return {}
    raw = data.transform.to_data(draw_samples(objective, cfg.eval.n_samples, generator, cfg.train.batch_size,
                                                    cfg.train.progress))
    m = {"sample_out_of_range": float(((raw < -1) | (raw > 1)).double().mean())}
    samples = raw.clamp(-1, 1)
    # (an 8-bit image split stays ``Pixels``: the novelty search reads it in pieces; images have the identity transform)
    train = data.train if isinstance(data.train, Pixels) else data.transform.to_data(data.train)
    test = data.transform.to_data(data.test)
    g_cpu = torch.Generator().manual_seed(cfg.train.seed + 17)
    if data.name == "digits" and cfg.eval.digits_fd:
        from ebmlab.metrics.digits import digits_metrics
        m.update(digits_metrics(samples, g_cpu, train=train, test=test))
    from ebmlab.metrics.novelty import novelty_summary
    m.update(novelty_summary(samples, train, test))
    if run_dir is not None:
        _write_outputs(objective, data, cfg, Path(run_dir), raw, samples, train, test)
    return m


def _write_outputs(objective, data, cfg, run_dir: Path, raw, samples, train, test) -> None:
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    save_npy_atomic(run_dir / "samples" / "samples.npy", raw.numpy())
    shown = f"{min(100, len(samples))} of {len(samples)}"
    plots.image_grid(samples[:100], run_dir / "samples" / "grid_final.png",
                     title=f"final samples{_ema_note(cfg, ' weights')}, {shown}")
    if not cfg.eval.plots:
        return
    from ebmlab.metrics.novelty import novelty_rows
    k = 3
    plots.image_grid(novelty_rows(samples, train, k=k), run_dir / "plots" / "novelty.png", nrow=1 + k,
                     title=f"sample | {k} nearest training images (pixel L2)")
    n = min(len(test), len(samples))  # equal counts
    sets = {"held-out data": energies(objective, data.transform.to_model(test[:n])),
            "samples": energies(objective, data.transform.to_model(samples[:n]))}
    plots.energy_histograms(sets, run_dir / "plots" / "energy_hist.png", title="energies of held-out images and samples")


def _ema_note(cfg, what: str = "") -> str:
    """The note ' (EMA)' for a sample figure's title where the run averages its weights (``train.ema``), else '':
    the paper 000 configs set ``train.ema: null``, and their figures said "(EMA)" all the same."""
    return f" (EMA{what})" if cfg.train.ema is not None else ""


# ----- sample grids during training ------------------------------------------------------------------
def _media(trainer):
    """The trainer's TensorBoard image writer (``training/logging.TBMedia``), opened on first use."""
    from ebmlab.training.logging import TBMedia

    media = getattr(trainer, "tb_media", None)
    if media is None:
        media = trainer.tb_media = TBMedia(trainer.run_dir)
    return media


def _ema_samples(trainer, n: int, final: bool) -> Tensor:
    """(n, ...) samples in model coordinates with the EMA weights, from a fixed noise (seed
    ``train.seed + 13``) so the figures of a run are comparable."""
    obj, cfg = trainer.objective, trainer.cfg
    g = torch.Generator(trainer.device).manual_seed(cfg.train.seed + 13)
    ema = trainer.ema.applied(obj) if (trainer.ema is not None and not final) else nullcontext()
    was_training = obj.training
    obj.eval()
    try:
        with ema:
            return obj.sample(n, generator=g).x.detach().cpu()
    finally:
        obj.train(was_training)


def grid_hook(trainer, final: bool = False) -> None:
    """Image runs: ``samples/grid_stepNNNNNN.png`` and the TensorBoard image ``samples``."""
    if trainer.data.kind != "image" or not getattr(trainer, "is_main", True):
        return
    path = Path(trainer.run_dir) / "samples" / f"grid_step{trainer.step:06d}.png"
    if not (final and path.exists()):  # else the periodic hook already drew this step's grid (EMA weights too)
        x = _ema_samples(trainer, min(GRID_N, trainer.cfg.eval.n_samples), final)
        plots.image_grid(trainer.data.transform.to_data(x), path,
                         title=f"samples at step {trainer.step}{_ema_note(trainer.cfg)}")
        _media(trainer).image("samples", plots.png_array(path), trainer.step)
    if final:
        _media(trainer).close()


SCATTER_N = 1000


def scatter_hook(trainer, final: bool = False) -> None:
    """Vector runs with ``train.sample_every``: ``samples/scatter_stepNNNNNN.png`` (data coordinates,
    first two coordinates, beside as many held-out points) and the TensorBoard image ``samples``. The final call
    under ``train.select_every`` draws the selected check's weights as ``scatter_selected_stepNNNNNN.png`` (they
    were drawn under the last step's name, or not at all when the periodic call had drawn that step)."""
    tc = trainer.cfg.train
    if trainer.data.kind != "vector" or not getattr(trainer, "is_main", True) or not tc.sample_every:
        return
    selected = getattr(getattr(trainer, "selector", None), "best_step", None) if final else None
    step, name = (selected, "scatter_selected_step") if selected is not None else (trainer.step, "scatter_step")
    path = Path(trainer.run_dir) / "samples" / f"{name}{step:06d}.png"
    if not (final and path.exists()):
        n = min(SCATTER_N, trainer.cfg.eval.n_samples, trainer.data.test.shape[0])
        tf = trainer.data.transform
        x = tf.to_data(_ema_samples(trainer, n, final))
        ref = tf.to_data(trainer.data.test[:n])
        ext = plots.data_box(ref, 0.3)
        title = f"step {step}" if selected is None else f"selected step {step} (of {trainer.step})"
        plots.sample_scatter({"held-out data": ref, f"samples from noise{_ema_note(trainer.cfg)}": x}, path,
                             extent=ext, title=title)
        _media(trainer).image("samples", plots.png_array(path), trainer.step)
    if final:
        _media(trainer).close()


# ----- ebmlab eval extensions ------------------------------------------------------------------------
def _run_samples(args, cfg, objective, data) -> Tensor:
    """The samples ``evaluate`` wrote in this command (data coordinates, clamped), else fresh ones."""
    path = Path(args.run) / "samples" / "samples.npy"
    if path.is_file():
        x = torch.from_numpy(np.load(path, allow_pickle=False))
    else:
        dev = next(objective.parameters()).device
        g = torch.Generator(dev).manual_seed(cfg.train.seed + 7)
        x = data.transform.to_data(draw_samples(objective, cfg.eval.n_samples, g, cfg.train.batch_size,
                                                        cfg.train.progress))
    return x.float().clamp(-1, 1)


VECTOR_OOD = ("shifted", "scaled")


def _flag(option: str) -> str:
    """An evaluation option as both the command line and Python spell it: ``--heldout-draws (heldout_draws=)``."""
    return f"--{option.replace('_', '-')} ({option}=)"


def check_eval_options(args, kind: str, name: str) -> None:
    """Refuse ``ebmlab eval`` options that cannot apply to this run (data ``kind`` and ``name``) before
    any sample is drawn: ``--fid`` on vectors or without the Inception weights, ``--digits-fd`` off
    digits, ``--heldout-draws`` on images or below 1, ``--inception-weights`` without ``--fid``, ``--ood`` naming
    neither a built-in set nor an existing file (nor, on images, a dataset), two OOD sets that would share a metric
    key (``ood_keys``)."""
    if kind != "image" and (getattr(args, "fid", False) or getattr(args, "inception_weights", None) is not None):
        given = _flag("fid") if getattr(args, "fid", False) else _flag("inception_weights")
        raise ConfigError(f"{given} needs an image run; this run's data {name!r} are vectors")
    if getattr(args, "inception_weights", None) is not None and not getattr(args, "fid", False):
        raise ConfigError(f"{_flag('inception_weights')} is the weight file of --fid's Inception network; give "
                          f"{_flag('fid')} too")
    if getattr(args, "fid", False):
        from ebmlab.metrics.inception import find_weights
        find_weights(getattr(args, "inception_weights", None))
    if getattr(args, "digits_fd", False) and name != "digits":
        raise ConfigError(f"{_flag('digits_fd')} scores digit images; this run's data are {name!r}")
    draws = getattr(args, "heldout_draws", None)
    if draws is not None and (kind != "vector" or draws < 1):
        raise ConfigError(f"{_flag('heldout_draws')} takes a positive count and vector data; got {draws} on {name!r} "
                          f"({kind})")
    if getattr(args, "draw_seed", None) is not None and draws is None:  # it was ignored without a word
        raise ConfigError(f"{_flag('draw_seed')} seeds the draws of {_flag('heldout_draws')}; give that too")
    for ood in getattr(args, "ood", None) or []:
        if kind == "vector" and ood not in VECTOR_OOD and not Path(ood).is_file():
            raise _not_a_vector_ood_set(ood)
        if kind == "image":
            _check_image_ood(ood)
    ood_keys(getattr(args, "ood", None) or [], getattr(args, "ood_arrays", None) or {})


def _check_image_ood(name: str) -> None:
    """An image run's ``--ood`` that names no built-in set, path or dataset is refused before any work."""
    try:
        from ebmlab.data.image_ood import known_ood_set, not_an_ood_set
    except ImportError:  # the image stack is missing: ood_set says so when it is needed
        return
    if not known_ood_set(name):
        raise not_an_ood_set(name)


def _not_a_vector_ood_set(name: str):
    """The DataError for a vector run's ``--ood`` naming neither a built-in set nor an existing file."""
    from ebmlab.errors import DataError
    return DataError(f"--ood {name!r} is neither 'shifted', 'scaled' nor an existing file: for vector runs use one "
                     "of those two or a .npy/.npz/.csv file of vectors")


def fid_extension(args, cfg, objective, data) -> dict:
    """``--fid``: FID and Inception Scores of the run's samples vs its test split."""
    if not getattr(args, "fid", False):
        return {}
    if data.kind != "image":
        raise ValueError(f"--fid needs an image run; this run's data {data.name!r} are vectors")
    from ebmlab.metrics.fid import frechet_distance, inception_score
    from ebmlab.metrics.inception import inception_outputs, load_inception

    model = load_inception(getattr(args, "inception_weights", None), next(objective.parameters()).device)
    f_s, l_s = inception_outputs(model, _run_samples(args, cfg, objective, data))
    f_t, l_t = inception_outputs(model, data.transform.to_data(data.test))
    is_s, is_s_std = inception_score(l_s, splits=min(10, len(l_s)))
    return {"fid": frechet_distance(f_s, f_t), "inception_score": is_s, "inception_score_std": is_s_std,
            "inception_score_data": inception_score(l_t, splits=min(10, len(l_t)))[0]}


def digits_extension(args, cfg, objective, data) -> dict:
    """``--digits-fd``: the digits feature distance and classifier scores (digits runs)."""
    if not getattr(args, "digits_fd", False):
        return {}
    if data.name != "digits":
        raise ValueError(f"--digits-fd scores digit images; this run's data are {data.name!r}")
    if cfg.eval.digits_fd:
        return {}  # evaluate_images already computed it in this command
    from ebmlab.metrics.digits import digits_metrics
    tf = data.transform
    return digits_metrics(_run_samples(args, cfg, objective, data), torch.Generator().manual_seed(cfg.train.seed + 17),
                          train=tf.to_data(data.train), test=tf.to_data(data.test))


def ood_set(name: str, data, generator) -> Tensor:
    """OOD inputs in model coordinates, shaped like ``data.test``."""
    if data.kind == "image":
        try:
            from ebmlab.data.image_ood import load_ood_set
        except ImportError:
            raise ValueError("--ood on images needs ebmlab.data.images (the image stack), which is not installed") from None
        return data.transform.to_model(load_ood_set(name, data, generator).float())
    if name == "shifted":
        return data.test + 1.0   # +1 per model coordinate: 1 std when standardised, 1 data unit when not
    if name == "scaled":
        return data.test * 1.5   # about the model origin: the training mean when standardised, else 0
    from ebmlab.data.arrays import load_vectors
    from ebmlab.errors import DataError
    if not Path(name).expanduser().exists():  # (~ in --ood=~/x.csv: the shell leaves it after "=")
        raise _not_a_vector_ood_set(name)
    x = load_vectors(name, min_rows=1, what="--ood file")  # an OOD set is scored whole, not split
    if x.shape[1:] != data.test.shape[1:]:
        raise DataError(f"--ood {name!r} has vectors of shape {tuple(x.shape[1:])}, the run's data {tuple(data.test.shape[1:])}")
    return data.transform.to_model(x.to(data.transform.dtype))  # (float64 rows of a float32 run: float32, as trained)


def _slug(name: str, path: bool = True) -> str:
    """The metric-key form of an OOD set's name: a file's stem (``path``; a set held in memory keeps its whole
    name), other characters than letters, digits and _ as _."""
    p = Path(name)
    base = (p.stem if p.suffix else (p.name or name)) if path else name
    return re.sub(r"[^A-Za-z0-9_]+", "_", base).strip("_") or "set"


def ood_keys(names, arrays) -> list[str]:
    """The metric keys ``ood_auroc_<slug>`` of the ``--ood`` ``names`` then the in-memory ``arrays``' names, in order.
    Two sets that would be reported under one key are refused (one would silently replace the other)."""
    seen: dict[str, str] = {}
    for name, path in [*((n, True) for n in names), *((n, False) for n in arrays)]:
        key = f"ood_auroc_{_slug(name, path)}"
        if key in seen:
            raise ConfigError(f"the OOD sets {seen[key]!r} and {name!r} would both be reported as {key}: give one "
                              "of them another name (a file's name without its suffix names it: rename or link the "
                              "file; in Python a set held in memory is named by its key in ood={name: array})")
        seen[key] = name
    return list(seen)


def ood_inputs(args, cfg, data) -> dict[str, Tensor]:
    """{``ood_auroc_<name>``: the set in model coordinates} of the ``--ood`` names and of the sets held in memory that
    ``Run.evaluate(ood={name: array})`` passes as ``args.ood_arrays`` (data coordinates, checked by
    ``api_data.ood_inputs``). Reads every set, so that a bad one is refused before any work."""
    names = getattr(args, "ood", None) or []
    arrays = getattr(args, "ood_arrays", None) or {}
    keys = iter(ood_keys(names, arrays))
    out = {}
    for name in names:  # each set's draw from the same seed, whichever sets come before it
        out[next(keys)] = ood_set(name, data, torch.Generator().manual_seed(cfg.train.seed + 19))
    for x in arrays.values():
        out[next(keys)] = data.transform.to_model(x)
    return out


def with_ood_inputs(args, cfg, data) -> SimpleNamespace:
    """A copy of the ``eval`` options ``args`` with ``ood_inputs`` (``ood_inputs``) read, for ``ood_extension``."""
    return SimpleNamespace(**vars(args), ood_inputs=ood_inputs(args, cfg, data))


def ood_extension(args, cfg, objective, data) -> dict:
    """``--ood NAME``: AUROC of -energy, held-out data vs each OOD set (``ood_auroc_<name>``), the sets of
    ``ood_inputs`` (read here unless ``args.ood_inputs`` holds them already: ``with_ood_inputs``)."""
    sets = getattr(args, "ood_inputs", None)
    sets = ood_inputs(args, cfg, data) if sets is None else sets
    if not sets:
        return {}
    from ebmlab.metrics.ood import auroc
    e_in = energies(objective, data.test)
    return {key: auroc(-e_in, -energies(objective, x)) for key, x in sets.items()}  # higher -E: more in-distribution
