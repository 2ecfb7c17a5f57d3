"""Extension points filled by other parts of the library, kept here so that the CLI and the loop
stay ignorant of images, OOD sets and FID.

- ``SAMPLE_HOOKS``: fn(trainer, final: bool) called every ``train.sample_every`` steps and at the end
  (the image stack writes ``samples/grid_stepNNNN.png``);
- ``EVAL_EXTENSIONS``: fn(args, cfg, objective, data) -> dict for ``ebmlab eval`` options
  (``--ood``, ``--fid``, ``--digits-fd``).
"""
from __future__ import annotations

SAMPLE_HOOKS: list = []
EVAL_EXTENSIONS: list = []


def sample_hook(trainer, final: bool = False) -> None:
    for fn in SAMPLE_HOOKS:
        fn(trainer, final)


def eval_extensions() -> list:
    return list(EVAL_EXTENSIONS)


def _register_builtins() -> None:
    from ebmlab.training import image_eval  # noqa: F401  (registers the sample-grid hook and eval options)


_register_builtins()
