"""ebmlab: energy-based models in PyTorch, five published methods on shared parts.

``ebmlab.load(run_dir)`` returns a trained energy; see README.md for the CLI.
"""
__version__ = "0.1.0"


def load(run_dir, device: str = "cpu"):
    """The trained energy (EMA weights) of a run, mapping data-coordinate (B, ...) to (B,)."""
    from ebmlab.training.run import load as _load
    return _load(run_dir, device=device)


__all__ = ["load", "__version__"]
