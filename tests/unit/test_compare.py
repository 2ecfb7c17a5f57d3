"""``ebmlab compare`` / ``ebmlab.compare`` (experiments/compare.py): the table holds each run's recorded values, marks
the best in the metric's own direction, takes the floor from the runs, says what is not like for like, refuses runs
of different data, and writes its files; the CLI prints the same table."""
import json

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.cli import main
from ebmlab.errors import ConfigError, RunError
from ebmlab.experiments.leaderboard_report import better

TINY = {"steps": 12, "progress": False, "batch_size": 64}
TINY_EVAL = {"n_samples": 64, "grid_size": 12, "long_run_factor": 2}


def _train(out, method="hybrid", data="mixture", **train):
    return ebmlab.train(method, data=data, out=out, model={"width": 16, "depth": 1}, train={**TINY, **train},
                        eval=TINY_EVAL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on the toy mixture (other methods, other step counts) and one on the rings."""
    root = tmp_path_factory.mktemp("compare")
    a = _train(root / "a")
    b = _train(root / "b", method="noise", steps=16)
    c = _train(root / "c", data="rings")
    return root, a, b, c


def test_the_table_holds_the_runs_values_and_marks_the_best_in_each_direction(runs):
    root, a, b, _ = runs
    c = ebmlab.compare([a, root / "b"])  # Run objects and paths both
    ma, mb = (json.loads((root / r / "metrics.json").read_text()) for r in ("a", "b"))
    assert "sample_energy_distance" in c.values and "sample_precision" in c.values and "density_kl" in c.values
    for m, (va, vb) in c.values.items():
        assert (va, vb) == (ma[m], mb[m])
        winner = [i for i, v in enumerate((va, vb)) if v == (min if better(m) == "lower" else max)(va, vb)]
        assert c.best[m] == winner, m
    assert c.floors["sample_energy_distance"] == pytest.approx(
        np.median([ma["sample_energy_distance_floor"], mb["sample_energy_distance_floor"]]))
    assert [f["method"] for f in c.facts] == ["hybrid", "noise"] and [f["step"] for f in c.facts] == [12, 16]
    assert any("different steps" in n for n in c.notes)
    md = c.markdown()
    assert md.count("**") == 2 * sum(len(v) for v in c.best.values()) and "data vs data (floor)" in md


def test_runs_of_other_data_are_refused_and_a_run_needs_its_metrics(runs, tmp_path):
    root, *_ = runs
    with pytest.raises(ConfigError, match="different data .name: 'mixture' vs 'rings'"):
        ebmlab.compare([root / "a", root / "c"])
    with pytest.raises(ConfigError, match="two or more different runs"):
        ebmlab.compare([root / "a", root / "a"])
    (tmp_path / "a").mkdir()
    for f in ("config.yaml", "run.json"):
        (tmp_path / "a" / f).write_bytes((root / "a" / f).read_bytes())
    with pytest.raises(RunError, match="no metrics.json: evaluate it first"):
        ebmlab.compare([root / "b", tmp_path / "a"])


def test_differing_settings_and_unshared_metrics_are_said(runs, tmp_path):
    """A metric only one run has is left out (and named); another eval.n_samples is a note."""
    import shutil

    root, *_ = runs
    shutil.copytree(root / "b", tmp_path / "b")
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    m["ood_auroc_shifted"] = 0.9
    (tmp_path / "b" / "metrics.json").write_text(json.dumps(m))
    cfg = (tmp_path / "b" / "config.yaml").read_text()
    (tmp_path / "b" / "config.yaml").write_text(cfg.replace("n_samples: 64", "n_samples: 65"))
    c = ebmlab.compare([root / "a", tmp_path / "b"])
    assert "ood_auroc_shifted" not in c.values
    assert any("not compared: ood_auroc_shifted" in n for n in c.notes)
    assert any(n.startswith("eval.n_samples differs (64, 65)") for n in c.notes)


def test_the_cli_prints_the_table_and_writes_the_files(runs, tmp_path, capsys):
    root, *_ = runs
    assert main(["compare", str(root / "a"), str(root / "b"), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(ebmlab.compare([root / "a", root / "b"]).markdown())
    for f in ("compare.md", "compare.json", "samples.png"):
        assert (tmp_path / "cmp" / f).is_file(), f
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["runs"] == [str(root / "a"), str(root / "b")] and saved["better"]["density_kl"] == "lower"
    assert main(["compare", str(root / "a"), str(root / "c")]) == 2
    assert "different data" in capsys.readouterr().err


def test_directions():
    assert [better(m) for m in ("fid", "long_run_energy_distance", "density_mode_mass_error", "sample_out_of_range")] == ["lower"] * 4
    assert [better(m) for m in ("inception_score", "digits_is", "sample_precision", "ood_auroc_x")] == ["higher"] * 4


def test_image_runs_get_one_grid_per_run(tmp_path):
    """Image runs: ``samples_<k>.png`` per run from its samples.npy (no scatter)."""
    from ebmlab.experiments.compare import Comparison, _write

    paths = []
    for k in range(2):
        p = tmp_path / f"r{k}" / "samples" / "samples.npy"
        p.parent.mkdir(parents=True)
        np.save(p, torch.rand(5, 1, 8, 8).mul(2).sub(1).numpy())
        paths.append(p)
    result = Comparison([str(tmp_path / "r0"), str(tmp_path / "r1")], [{"method": m, "seed": 0, "step": 5} for m in ("cdrl", "drl")],
                        {"digits_fd": [1.0, 2.0]}, best={"digits_fd": [0]})
    _write(result, paths, "image", tmp_path / "out")
    assert (tmp_path / "out" / "samples_0.png").is_file() and (tmp_path / "out" / "samples_1.png").is_file()
    assert not (tmp_path / "out" / "samples.png").exists()
