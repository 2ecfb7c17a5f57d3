"""Round 60 (session 19): README statements checked as a new user (a read-only walkthrough of 2938047,
docs/testing.md "Sixtieth round"); each ``# WAS A BUG`` test fails there and passes since the fixes."""
from __future__ import annotations

import pytest

import ebmlab
from ebmlab.errors import ConfigError


# WAS A BUG: an experiment refused for a bad --datasets/--methods (or --rescore of cells that never ran) still claims its fresh --out (experiment.json), so another experiment there is then refused
@pytest.mark.parametrize("name, options", [("leaderboard", {"datasets": ("wine",)}),
                                           ("leaderboard", {"methods": ("bogus",)}),
                                           ("data_defaults", {"methods": ("bogus",)})])
def test_an_experiment_refused_for_its_options_leaves_a_fresh_out_unclaimed(tmp_path, name, options):
    out = tmp_path / "exp"
    with pytest.raises(ConfigError):
        ebmlab.experiment(name, out=out, quick=True, **options)
    # README "Experiments and benchmarks": DIR must be new, empty or that experiment's own, refused "before anything
    # is written"; a command refused for its own options must not make DIR another experiment's
    assert not (out / "experiment.json").exists(), "the refused command left DIR marked as its experiment's"
    from ebmlab.experiments import _claim_out
    _claim_out(out, "paper004")  # the next, different experiment into the same DIR must be accepted


# WAS A BUG: a vector run with eval.plots=false writes no samples/samples.npy (the save sits inside the plotting helper), so `compare --out` leaves it out of its figure although eval.plots "changes nothing they ... measure"
def test_a_vector_run_without_plots_still_writes_its_final_samples(tmp_path):
    out = tmp_path / "run"
    ebmlab.train("hybrid", "8gaussians", out=out,
                 train={"steps": 2, "progress": False, "threads": 1},
                 eval={"plots": False, "n_samples": 50, "long_run_factor": 2, "grid_size": 20})
    assert (out / "metrics.json").is_file()
    assert (out / "samples" / "samples.npy").is_file(), "eval.plots=false dropped the run's samples/samples.npy"
