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
from ebmlab.experiments.compare import fmt
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
        top = fmt((min if better(m) == "lower" else max)(va, vb))  # best at the precision shown
        winner = [i for i, v in enumerate((va, vb)) if fmt(v) == top]
        assert c.best[m] == winner, m
    assert c.floors["sample_energy_distance"] == pytest.approx(
        np.median([ma["sample_energy_distance_floor"], mb["sample_energy_distance_floor"]]))
    assert [f["method"] for f in c.facts] == ["hybrid", "noise"] and [f["step"] for f in c.facts] == [12, 16]
    assert any("different steps" in n for n in c.notes)
    md = c.markdown()
    assert md.count("**") == 2 * sum(len(v) for v in c.best.values()) and "data vs data (floor)" in md


def test_runs_of_other_data_are_refused_and_a_run_needs_its_metrics(runs, tmp_path):
    root, *_ = runs
    with pytest.raises(ConfigError, match=r"different data \('mixture' vs 'rings'\)"):
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
    from ebmlab.experiments.compare_figure import samples_figure

    paths = []
    for k in range(2):
        p = tmp_path / f"r{k}" / "samples" / "samples.npy"
        p.parent.mkdir(parents=True)
        np.save(p, torch.rand(5, 1, 8, 8).mul(2).sub(1).numpy())
        paths.append(p)
    (tmp_path / "out").mkdir()
    files, notes = samples_figure([str(tmp_path / "r0"), str(tmp_path / "r1")], ["0: cdrl", "1: drl"], "image",
                                  (1, 8, 8), tmp_path / "out")
    assert files == ["samples_0.png", "samples_1.png"] and notes == []
    assert all((tmp_path / "out" / f).is_file() for f in files) and not (tmp_path / "out" / "samples.png").exists()


# ----- what an audit of the first version found (2026-12-06, fourth session): each failed on it -----------------
def _copy(runs_root, name, tmp_path, edit_metrics=None, samples=None):
    """A copy of run ``name`` in ``tmp_path`` with its metrics edited and/or its samples.npy replaced."""
    import shutil

    dst = tmp_path / f"{name}_copy"
    shutil.copytree(runs_root / name, dst)
    if edit_metrics:
        m = json.loads((dst / "metrics.json").read_text())
        m.update(edit_metrics)
        (dst / "metrics.json").write_text(json.dumps(m))
    if samples is not None:
        (dst / "samples" / "samples.npy").unlink()
        if not isinstance(samples, str):
            np.save(dst / "samples" / "samples.npy", samples)
        elif samples == "text":
            (dst / "samples" / "samples.npy").write_text("not an array")
    return dst


def test_bad_samples_are_left_out_of_the_figure_with_a_note_not_a_crash(runs, tmp_path, capsys):
    """A samples.npy of another width, a text file, none, or rows with NaN/inf: the table and files are written,
    the figure leaves out (or cleans) what it cannot show, and the notes and the printed file list say so."""
    root, *_ = runs
    wide = _copy(root, "b", tmp_path, samples=np.zeros((64, 3), np.float32))
    text = _copy(root, "a", tmp_path, samples="text")
    bad = np.load(root / "b" / "samples" / "samples.npy")
    bad[:5] = np.nan
    bad[5] = np.inf
    nans = _copy(root, "b", tmp_path / "n", samples=bad)
    c = ebmlab.compare([root / "a", wide, text, nans], out=tmp_path / "cmp")
    assert c.files == ["compare.md", "compare.json", "samples.png"]
    said = " ".join(c.notes)
    assert "not rows of the run's shape (2,): left out" in said and "cannot be read as a plain numeric array" in said
    assert "6 of 64 samples are not finite; dropped from the figure" in said and "unsafely" not in said
    none1, none2 = (_copy(root, n, tmp_path / "x", samples="none") for n in ("a", "b"))
    assert main(["compare", str(none1), str(none2), "--out", str(tmp_path / "cmp2")]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("written to " + str(tmp_path / "cmp2") + ": compare.md, compare.json")
    assert "no samples figure" in out and not (tmp_path / "cmp2" / "samples.png").exists()


def test_the_figure_is_framed_by_the_held_out_data_and_counts_far_points(runs, tmp_path, monkeypatch):
    """A diverged run's far samples no longer set the axes for every panel: the frame is the held-out data's,
    and the far points are counted in their panel's title."""
    from ebmlab import plots

    root, *_ = runs
    from ebmlab.experiments.compare_figure import _heldout

    far = _heldout(root / "b", []).numpy()[:64].copy()  # held-out rows: inside the frame, but for these 7
    far[:7] = 1e3
    diverged = _copy(root, "b", tmp_path, samples=far)
    seen = {}
    monkeypatch.setattr(plots, "sample_scatter", lambda sets, path, extent=None, **kw: seen.update(sets=sets, extent=extent))
    ebmlab.compare([root / "a", diverged], out=tmp_path / "cmp")
    names = list(seen["sets"])
    assert names[0].startswith("held-out data") and names[2].endswith("\n7 outside the frame")
    assert max(abs(e) for e in seen["extent"]) < 100


def test_values_are_ranked_as_shown_and_unranked_values_are_said(runs, tmp_path):
    root, *_ = runs
    a = json.loads((root / "a" / "metrics.json").read_text())
    b = _copy(root, "b", tmp_path, {"sample_mode_mass_error": a["sample_mode_mass_error"] + 4e-17,
                                    "density_kl": float("nan"), "sample_precision": "0.9", "long_run_steps": 999})
    c = ebmlab.compare([root / "a", b], out=tmp_path / "cmp")
    assert c.best["sample_mode_mass_error"] == [0, 1]  # equal as shown: both bold
    assert "sample_precision" not in c.values and c.best["density_kl"] == [0]
    said = " ".join(c.notes)
    assert "sample_precision is not a number in" in said and "'0.9'" in said
    assert "density_kl is not finite in" in said and "| nan |" in c.markdown().replace("**", "")
    assert "long_run_steps differs" in said
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())  # strict JSON: no NaN
    assert saved["values"]["density_kl"][1] is None
    assert fmt(0.9999904800000001) == "0.99999" and fmt(0.5) == "0.5" and fmt(1234.5678) == "1235" and fmt(9.99999) == "9.99999"


def test_unbiased_estimates_below_zero_rank_as_zero_and_draw_means_are_compared(runs, tmp_path):
    root, *_ = runs
    a = _copy(root, "a", tmp_path / "1", {"sample_energy_distance_heldout": -0.009, "sample_energy_distance_heldout_mean": 0.01,
                                          "eval_n_samples_note": "the held-out split has 12 rows"})
    b = _copy(root, "b", tmp_path / "2", {"sample_energy_distance_heldout": -0.002, "sample_energy_distance_heldout_mean": 0.02})
    c = ebmlab.compare([a, b])
    assert c.best["sample_energy_distance_heldout"] == [0, 1] and c.best["sample_energy_distance_heldout_mean"] == [0]
    assert any(n.endswith("the held-out split has 12 rows") for n in c.notes)
    assert "below 0 ranks as 0" in c.markdown()


def test_misuse_is_said_precisely(runs, tmp_path):
    root, *_ = runs
    with pytest.raises(ConfigError, match="as a list of two or more directories"):
        ebmlab.compare(str(root / "a"))
    with pytest.raises(ConfigError, match=r"'.*a' and '.*a/' are the same run"):
        ebmlab.compare([root / "a", str(root / "a") + "/"])
    ebmlab.train("hybrid", data="mixture", out=tmp_path / "v", model={"width": 16, "depth": 1}, train=TINY,
                 eval=TINY_EVAL, overrides={"data.val_fraction": 0.1})
    with pytest.raises(ConfigError, match=r"different data \(data.val_fraction: None vs 0.1\)"):
        ebmlab.compare([root / "a", tmp_path / "v"])


def test_pooling_seeds_gives_one_row_per_setting_with_mean_and_std(runs, tmp_path, capsys):
    """``pool_seeds``: runs that differ only in train.seed (and logging) form one row, mean ± std (ddof 1) of their
    recorded values; the rows' differing keys are said; one setting alone is refused."""
    root, *_ = runs
    seeds = [_train(tmp_path / f"h{s}", seed=s, log_every=3 + s) for s in (1, 2)]  # a's setting, other seeds
    c = ebmlab.compare([root / "a", root / "b", *seeds], pool_seeds=True)
    assert c.groups == [[str(root / "a"), *(str(r.path) for r in seeds)], [str(root / "b")]]
    assert c.runs == [str(root / "a") + " (+2)", str(root / "b")] and c.facts[0]["seed"] == "0,1,2"
    per_run = [json.loads((p / "metrics.json").read_text()) for p in (root / "a", *(r.path for r in seeds))]
    kl = np.array([m["density_kl"] for m in per_run])
    assert c.values["density_kl"][0] == pytest.approx(kl.mean()) and c.stds["density_kl"][0] == pytest.approx(kl.std(ddof=1))
    assert np.isnan(c.stds["density_kl"][1]) and " ± -" in c.markdown()
    assert any(n.startswith("the rows differ in: method.name") and "train.steps" in n for n in c.notes)
    assert any("different numbers of seeds (3, 1)" in n for n in c.notes)
    with pytest.raises(ConfigError, match="differ only in their seeds"):
        ebmlab.compare([root / "a", *seeds], pool_seeds=True)
    assert main(["compare", str(root / "a"), str(root / "b"), str(seeds[0].path), "--pool-seeds",
                 "--out", str(tmp_path / "cmp")]) == 0
    assert "runs (mean ± std over seeds)" in capsys.readouterr().out
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["groups"][1] == [str(root / "b")]


def test_the_floor_row_takes_each_metrics_own_reference(runs, tmp_path):
    """The held-out distance's floor is the training rows' score, the IS's the data's own (median over the runs)."""
    root, *_ = runs
    a = _copy(root, "a", tmp_path / "1", {"inception_score": 3.0, "inception_score_data": 9.0, "fid": 50.0,
                                          "sample_energy_distance_heldout": 0.1, "sample_energy_distance_heldout_train": 0.01})
    b = _copy(root, "b", tmp_path / "2", {"inception_score": 4.0, "inception_score_data": 11.0, "fid": 40.0,
                                          "sample_energy_distance_heldout": 0.2, "sample_energy_distance_heldout_train": 0.03})
    c = ebmlab.compare([a, b])
    assert c.floors["inception_score"] == 10.0 and c.floors["sample_energy_distance_heldout"] == pytest.approx(0.02)
    assert "fid" not in c.floors and c.best["fid"] == [1] and c.best["inception_score"] == [1]


# ----- what an audit of --pool-seeds found (2026-12-06, fourth session) ------------------------------------------
def _variant(src, dst, seed, config=None, metrics=None):
    """A copy of run ``src`` at ``dst`` recorded as trained with ``seed`` and the ``config`` edits
    ({"section.key": value}), its metrics.json edited with ``metrics``."""
    import shutil

    import yaml

    shutil.copytree(src, dst)
    raw = yaml.safe_load((dst / "config.yaml").read_text())
    for k, v in {"train.seed": seed, **(config or {})}.items():
        sec, key = k.split(".", 1)
        if v is _DROP:
            raw[sec].pop(key)
        else:
            raw[sec][key] = v
    (dst / "config.yaml").write_text(yaml.safe_dump(raw))
    m = json.loads((dst / "metrics.json").read_text())
    (dst / "metrics.json").write_text(json.dumps({**m, **(metrics or {})}))
    return dst


_DROP = object()


def test_pooling_counts_a_repeated_seed_once_and_groups_equal_settings(runs, tmp_path):
    """A repeat of a seed is counted once (and said); ``lam: 5`` pools with ``lam: 5.0``, an absent key with a null
    one, and another ``eval.plots`` with the rest (it draws plots, it measures nothing)."""
    root, *_ = runs
    lam = json.loads(json.dumps(__import__("yaml").safe_load((root / "a" / "config.yaml").read_text())))["method"]["lam"]
    a1 = _variant(root / "a", tmp_path / "a1", 1, {"method.lam": int(lam) if float(lam).is_integer() else lam})
    a2 = _variant(root / "a", tmp_path / "a2", 2, {"data.hflip": _DROP, "eval.plots": False})
    rep = _variant(root / "a", tmp_path / "rep", 1)
    c = ebmlab.compare([root / "a", a1, a2, rep, root / "b"], pool_seeds=True)
    assert c.groups == [[str(root / "a"), str(a1), str(a2)], [str(root / "b")]] and c.facts[0]["seed"] == "0,1,2"
    assert any(n.startswith(f"{rep} repeats seed 1 of {a1}") for n in c.notes)


def test_pooled_bold_is_the_best_mean_and_the_rows_a_welch_test_cannot_tell_from_it(runs, tmp_path):
    root, *_ = runs
    rows = {"x": [1.0, 1.1, 0.9], "y": [1.05, 1.0, 1.1], "z": [5.0, 5.1, 4.9]}  # lower is better: x, and y beside it
    paths = [_variant(root / "a", tmp_path / f"{r}{s}", s, {"train.lr": 1e-3 * (1 + i)},
                      {"density_kl": v, "sample_precision": float("nan") if (r, s) == ("z", 1) else 0.5})
             for i, (r, vs) in enumerate(rows.items()) for s, v in enumerate(vs)]
    c = ebmlab.compare(paths, pool_seeds=True)
    assert c.values["density_kl"] == pytest.approx([1.0, 1.05, 5.0]) and c.best["density_kl"] == [0, 1]
    assert any(n.startswith("bold: the best mean and every row a Welch t-test") for n in c.notes)
    assert c.best["sample_precision"] == [0, 1]  # z's NaN seed: its row is not ranked, and the note says so
    assert any("its row is not ranked on sample_precision" in n for n in c.notes)


def test_non_finite_images_are_dropped_not_painted_and_a_damaged_log_gives_no_step(tmp_path):
    """Images with a NaN are left out of their grid (ebmlab never paints over a non-finite value), and a run of only
    such images is left out; a last log row that is not a mapping gives step "-"."""
    from ebmlab.experiments.compare import _last_logged_step
    from ebmlab.experiments.compare_figure import samples_figure

    x = torch.rand(5, 1, 8, 8).numpy()
    x[1, 0, 2, 2] = np.nan
    for k, arr in enumerate((x, np.full((3, 1, 8, 8), np.nan, np.float32))):
        (tmp_path / f"r{k}" / "samples").mkdir(parents=True)
        np.save(tmp_path / f"r{k}" / "samples" / "samples.npy", arr)
    (tmp_path / "out").mkdir()
    files, notes = samples_figure([str(tmp_path / "r0"), str(tmp_path / "r1")], ["a", "b"], "image", (1, 8, 8),
                                  tmp_path / "out")
    assert files == ["samples_0.png"] and "1 of 5 shown samples are not finite; dropped" in notes[0]
    assert notes[-1].endswith("no finite sample to show: left out of the figure")
    (tmp_path / "r0" / "metrics.jsonl").write_text('{"step": 4}\n[1, 2]\n')
    assert _last_logged_step(tmp_path / "r0") == "-" and _last_logged_step(tmp_path / "nowhere") == "-"
