"""Config, training loop, checkpoints, EMA, logging, evaluation."""
