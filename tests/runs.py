"""A training run in a test: lock the run directory, build the ``Trainer``, optionally resume, fit, release."""
from ebmlab.training.loop import Trainer, prepare_run_dir


def fit_in(run_dir, cfg, resume: bool = False, after=None, on_sample=None) -> Trainer:
    """Train ``cfg`` in ``run_dir`` (``resume``: from its latest checkpoint; ``on_sample``: ``fit``'s sample hook, as
    the command line passes ``training.hooks.sample_hook``); ``after(trainer)`` runs while the directory is still
    locked (e.g. the final evaluation). Returns the trainer."""
    lock = prepare_run_dir(run_dir, cfg, resume=resume, overwrite=False)
    try:
        trainer = Trainer(cfg, run_dir)
        if resume:
            trainer.resume()
        trainer.fit() if on_sample is None else trainer.fit(on_sample=on_sample)
        if after is not None:
            after(trainer)
    finally:
        lock.release()
    return trainer
