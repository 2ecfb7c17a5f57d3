"""Extension points, kept here so that the CLI and the loop stay ignorant of images, OOD sets and FID.
The lists are built here from ``training/image_eval.py`` (which does not import this module).

- ``SAMPLE_HOOKS``: fn(trainer, final: bool) called every ``train.sample_every`` steps and at the end
  (the image stack writes ``samples/grid_stepNNNNNN.png``, vector runs
  ``samples/scatter_stepNNNNNN.png``; both also TensorBoard images);
- ``EVAL_EXTENSIONS``: fn(args, cfg, objective, data) -> dict for ``ebmlab eval`` options
  (``--ood``, ``--fid``, ``--digits-fd``, ``--heldout-draws``).
"""
from __future__ import annotations

from ebmlab.training import heldout, image_eval

SAMPLE_HOOKS: list = [image_eval.grid_hook, image_eval.scatter_hook]
EVAL_EXTENSIONS: list = [image_eval.fid_extension, image_eval.digits_extension, image_eval.ood_extension,
                         heldout.draws_extension]


def sample_hook(trainer, final: bool = False) -> None:
    """Call every ``SAMPLE_HOOKS`` function (sample figures during training; ``final`` at the end)."""
    for fn in SAMPLE_HOOKS:
        fn(trainer, final)


def eval_extensions() -> list:
    """The ``ebmlab eval`` option handlers (``EVAL_EXTENSIONS``)."""
    return list(EVAL_EXTENSIONS)
