"""The claim harness (experiments/claims.py): paired verdicts with margins, divergence as the worst
value, the same-step check, cached cells, and the tables."""
from __future__ import annotations

import json
import math
import random

import pytest

from ebmlab.errors import ConfigError
from ebmlab.experiments import claims
from ebmlab.experiments.claims import Cell, Claim


def _records(values: dict[str, list], diverged: dict | None = None) -> dict:
    """{(arm, seed): record} with metric ``m`` = values[arm][seed]; ``diverged``: {arm: [seeds]}."""
    out = {}
    for arm, vals in values.items():
        for s, v in enumerate(vals):
            div = s in (diverged or {}).get(arm, [])
            out[(arm, s)] = {"arm": arm, "seed": s, "step": 100, "failed": None,
                             "diverged": "step 50: loss is nan" if div else None, "metrics": {} if div else {"m": v}}
    return out


def _table(values, diverged=None, seeds=(0, 1, 2)):
    return claims.summary_table(_records(values, diverged), list(values), ["m"], seeds)


def test_clear_paired_win_holds_and_reverse_is_reversed():
    t = _table({"a": [0.10, 0.12, 0.11], "b": [0.50, 0.55, 0.52]})
    assert claims.decide(Claim("a lower", "a", "b", "m", "lower", 0.05), t)["verdict"] == "holds"
    assert claims.decide(Claim("b lower", "b", "a", "m", "lower", 0.05), t)["verdict"] == "reversed"
    assert claims.decide(Claim("a higher", "a", "b", "m", "higher", 0.05), t)["verdict"] == "reversed"


def test_margin_and_spread_decide():
    t = _table({"a": [0.10, 0.12, 0.11], "b": [0.13, 0.15, 0.14]})  # a lower by 0.03 on every seed
    assert claims.decide(Claim("", "a", "b", "m", "lower", 0.02), t)["verdict"] == "holds"
    assert claims.decide(Claim("", "a", "b", "m", "lower", 0.05), t)["verdict"] == "not shown"
    # the seed spread (std 0.2) exceeds the stated margin: it becomes the effective margin
    noisy = _table({"a": [0.0, 0.2, 0.4], "b": [0.3, 0.5, 0.7]})
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.01), noisy)
    assert v["effective_margin"] == pytest.approx(0.2) and v["verdict"] == "holds"
    assert v["diffs"] == pytest.approx([0.3, 0.3, 0.3])


def test_mixed_signs_are_not_shown():
    t = _table({"a": [0.1, 0.5, 0.1], "b": [0.3, 0.2, 0.3]})
    assert claims.decide(Claim("", "a", "b", "m", "lower", 0.0), t)["verdict"] == "not shown"


def test_diverged_cell_is_worst():
    t = _table({"a": [0.1, 0.1, 0.1], "b": [0.5, 0.5, 0.5]}, diverged={"b": [1]})
    v = claims.decide(Claim("", "a", "b", "m", "lower", 0.05), t)
    assert v["verdict"] == "holds" and v["diffs"][1] == math.inf
    t = _table({"a": [0.1, 0.1, 0.1], "b": [0.5, 0.5, 0.5]}, diverged={"a": [2]})
    assert claims.decide(Claim("", "a", "b", "m", "lower", 0.05), t)["verdict"] == "not shown"
    assert t["a"]["diverged"] == ["seed 2: step 50: loss is nan"]
    assert t["a"]["m"]["per_seed"][2] is None and t["a"]["m"]["mean"] == pytest.approx(0.1)


def test_fixed_bar():
    t = _table({"a": [0.9, 0.95, 0.92]})
    assert claims.decide(Claim("", "a", 0.8, "m", "higher", 0.05), t)["verdict"] == "holds"
    assert claims.decide(Claim("", "a", 0.9, "m", "higher", 0.05), t)["verdict"] == "not shown"


def test_false_positive_rate_under_no_effect_is_small():
    """Two arms with the same distribution: the rule (all three paired differences beyond the larger
    seed spread) almost never declares a winner; the old any-of-several rule passed 27-46 %."""
    rng = random.Random(0)
    wins = 0
    for _ in range(2000):
        t = _table({"a": [rng.gauss(0, 1) for _ in range(3)], "b": [rng.gauss(0, 1) for _ in range(3)]})
        wins += claims.decide(Claim("", "a", "b", "m", "lower", 0.0), t)["verdict"] == "holds"
    assert wins / 2000 < 0.05


def test_same_step_check():
    recs = _records({"a": [1, 2], "b": [1, 2]})
    assert claims.check_same_step(recs) == 100
    recs[("b", 1)]["step"] = 60
    with pytest.raises(RuntimeError, match="different steps"):
        claims.check_same_step(recs)
    recs[("b", 1)]["diverged"] = "step 60: nan"  # a diverged cell does not count
    assert claims.check_same_step(recs) == 100


CALLS = []


def _cell_fn(params: dict, seed: int, run_dir) -> dict:
    CALLS.append((params["x"], seed))
    if params["x"] == "boom":
        raise ValueError("bad setting")
    return {"m": params["x"] * 10 + seed, "step": 5, "diverged": None}


def test_run_cells_caches_and_records_failures(tmp_path):
    CALLS.clear()
    cells = [Cell("a", s, _cell_fn, {"x": 1}) for s in (0, 1)] + [Cell("bad", 0, _cell_fn, {"x": "boom"})]
    recs = claims.run_cells(tmp_path, cells, jobs=1)
    assert recs[("a", 1)]["metrics"]["m"] == 11 and recs[("a", 1)]["step"] == 5
    assert recs[("bad", 0)]["failed"] == "ValueError: bad setting"
    assert (tmp_path / "cells" / "bad" / "seed0" / "failure.txt").exists()
    assert json.loads((tmp_path / "cells" / "a" / "seed0" / "cell.json").read_text())["metrics"]["m"] == 10
    n = len(CALLS)
    claims.run_cells(tmp_path, cells, jobs=1)  # everything cached
    assert len(CALLS) == n
    claims.run_cells(tmp_path, [Cell("a", 0, _cell_fn, {"x": 2})], jobs=1)  # new parameters: rerun
    assert len(CALLS) == n + 1


VERSION = ["v1"]


def _fingerprint(params: dict, seed: int) -> str:
    return f"{VERSION[0]}:{params['x']}:{seed}"


def test_a_changed_fingerprint_makes_a_cached_cell_stale(tmp_path):
    """A cell with a ``fingerprint`` (what the library would now build: leaderboard cells hash their
    resolved config) is rerun when it changes; cells without one, and unchanged ones, are reused."""
    CALLS.clear()
    cells = [Cell("a", 0, _cell_fn, {"x": 1}, fingerprint=_fingerprint), Cell("b", 0, _cell_fn, {"x": 3})]
    VERSION[0] = "v1"
    claims.run_cells(tmp_path, cells, jobs=1)
    assert json.loads((tmp_path / "cells" / "a" / "seed0" / "cell.json").read_text())["fingerprint"] == "v1:1:0"
    claims.run_cells(tmp_path, cells, jobs=1)
    assert len(CALLS) == 2  # both reused
    VERSION[0] = "v2"  # e.g. a default changed
    recs = claims.run_cells(tmp_path, cells, jobs=1)
    assert CALLS[2:] == [(1, 0)] and recs[("a", 0)]["fingerprint"] == "v2:1:0"  # only the fingerprinted cell reran
    assert cells[0] == Cell("a", 0, _cell_fn, {"x": 1}) and cells[0].key() == Cell("a", 0, _cell_fn, {"x": 1}).key()


def _prepared_cell(params: dict, seed: int, run_dir) -> dict:
    """A cell that makes its run directory as the experiments do (``runner.train_and_evaluate``)."""
    from ebmlab.training.config import load_config
    from ebmlab.training.run_dir import prepare_run_dir
    CALLS.append((params["x"], seed))
    if VERSION[0] == "v1":
        raise ValueError("fails before writing its run")
    prepare_run_dir(run_dir, load_config(None, ["train.steps=1"]), resume=False, overwrite=True).release()
    return {"m": 1}


def test_a_failed_cell_whose_fingerprint_changed_runs_again_in_its_directory(tmp_path):
    """A failed cell leaves only cell.json and failure.txt; run again (stale), its run directory was refused as
    "not an ebmlab run" and the cell failed again without training."""
    CALLS.clear()
    cells = [Cell("f", 0, _prepared_cell, {"x": 1}, fingerprint=_fingerprint)]
    VERSION[0] = "v1"
    assert claims.run_cells(tmp_path, cells, jobs=1)[("f", 0)]["failed"]
    VERSION[0] = "v2"
    rec = claims.run_cells(tmp_path, cells, jobs=1)[("f", 0)]
    assert rec["failed"] is None and rec["metrics"]["m"] == 1 and len(CALLS) == 2
    d = tmp_path / "cells" / "f" / "seed0"
    assert (d / "config.yaml").is_file() and not (d / "failure.txt").exists()


def test_leaderboard_fingerprint_follows_the_resolved_config():
    from ebmlab.experiments import leaderboard
    params = {"config": "default", "overrides": ["data.name=rings"], "ood": []}
    a = leaderboard.config_fingerprint(params, 0)
    assert a == leaderboard.config_fingerprint(dict(params), 0) and a != leaderboard.config_fingerprint(params, 1)
    assert a != leaderboard.config_fingerprint({**params, "overrides": ["data.name=rings", "method.ais_resample=0"]}, 0)


def test_results_files(tmp_path):
    t = _table({"a": [0.1, 0.12, 0.11], "b": [0.5, 0.55, 0.52]})
    v = [claims.decide(Claim("a beats b", "a", "b", "m", "lower", 0.05), t)]
    res = claims.write_claim_results(tmp_path, "999", "a beats b", {"main": t}, v, (0, 1, 2), {"main": ["m"]})
    assert res["claim_holds"] is True
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tables"]["main"]["a"]["m"]["per_seed"] == [0.1, 0.12, 0.11]
    assert saved["claims"][0]["margin"] == 0.05 and saved["claims"][0]["verdict"] == "holds"
    md = (tmp_path / "results.md").read_text()
    assert "0.11 ± 0.01" in md and "**holds**" in md and "seed 2" in md


def _rescore(params: dict, seed: int, run_dir) -> dict:
    CALLS.append(("rescore", params["x"], seed))
    return {"m": params["x"] * 10 + seed + params.get("drift", 0), "new": 7.0, "step": 5}


def test_a_cached_cell_lacking_a_required_metric_is_rescored_not_retrained(tmp_path):
    """``Cell.requires`` + ``Cell.rescore``: a metric added after a cell ran is computed from its stored run;
    a stored metric the rescore computes differently is replaced and listed; a failed cell is left alone;
    without ``rescore`` the cell runs again."""
    CALLS.clear()
    old = [Cell("a", 0, _cell_fn, {"x": 1}), Cell("bad", 0, _cell_fn, {"x": "boom"})]
    claims.run_cells(tmp_path, old, jobs=1)
    new = [Cell(c.arm, c.seed, c.fn, c.params, requires=("new",), rescore=_rescore) for c in old]
    recs = claims.run_cells(tmp_path, new, jobs=1)
    assert CALLS[2:] == [("rescore", 1, 0)]  # the failed cell is not rescored, nothing retrained
    r = recs[("a", 0)]
    assert r["metrics"] == {"m": 10, "new": 7.0} and r["rescored"]["added"] == ["new"] and not r["rescored"]["changed"]
    claims.run_cells(tmp_path, new, jobs=1)
    assert len(CALLS) == 3  # complete now: cached
    drift = Cell("b", 0, _cell_fn, {"x": 2, "drift": 1})
    claims.run_cells(tmp_path, [drift], jobs=1)
    r = claims.run_cells(tmp_path, [Cell("b", 0, _cell_fn, drift.params, requires=("new",), rescore=_rescore)],
                         jobs=1)[("b", 0)]
    assert r["metrics"]["m"] == 21 and r["rescored"]["changed"] == {"m": [20, 21]}  # today's value, the old one listed
    claims.run_cells(tmp_path, [Cell("b", 0, _cell_fn, drift.params, requires=("new",), rescore=_rescore)], jobs=1)
    k = len(CALLS)
    claims.run_cells(tmp_path, [Cell("b", 0, _cell_fn, drift.params, rescore=_rescore)], jobs=1, rescore=True)
    assert CALLS[k:] == [("rescore", 2, 0)]  # rescore=True: every finished cell that can be
    with pytest.raises(ConfigError, match="--rescore evaluates finished cells again without training, but 1 of"):
        claims.run_cells(tmp_path, [Cell("never_ran", 0, _cell_fn, {"x": 9}, rescore=_rescore)], jobs=1, rescore=True)
    assert CALLS[k:] == [("rescore", 2, 0)]  # ... and trains none: a cell that never ran is refused before any work
    n = len(CALLS)
    claims.run_cells(tmp_path, [Cell("c", 0, _cell_fn, {"x": 3})], jobs=1)
    claims.run_cells(tmp_path, [Cell("c", 0, _cell_fn, {"x": 3}, requires=("new",))], jobs=1)
    assert CALLS[n:] == [(3, 0), (3, 0)]  # no rescore given: run again


def test_a_record_from_before_fingerprints_is_reused_when_its_stored_run_matches(tmp_path):
    """``Cell.run_fingerprint``: a cached record without a fingerprint is current when the fingerprint of its
    stored run equals today's (it is then written into the record), else it runs again."""
    CALLS.clear()
    VERSION[0] = "v1"
    claims.run_cells(tmp_path, [Cell("a", 0, _cell_fn, {"x": 1}), Cell("b", 0, _cell_fn, {"x": 2})], jobs=1)
    stored = {"a": "v1:1:0", "b": "v0:2:0"}  # b's run was built by an older library
    cells = [Cell(arm, 0, _cell_fn, {"x": x}, fingerprint=_fingerprint,
                  run_fingerprint=lambda run_dir: stored[run_dir.parent.name]) for arm, x in (("a", 1), ("b", 2))]
    claims.run_cells(tmp_path, cells, jobs=1)
    assert CALLS[2:] == [(2, 0)]  # only b reran
    assert json.loads((tmp_path / "cells" / "a" / "seed0" / "cell.json").read_text())["fingerprint"] == "v1:1:0"


def test_leaderboard_run_fingerprint_is_the_hash_of_the_stored_config(tmp_path):
    from ebmlab.config import save_config
    from ebmlab.experiments import leaderboard
    params = {"config": "default", "overrides": ["data.name=rings"], "ood": []}
    save_config(leaderboard.experiment_config("default", ["data.name=rings", "train.seed=0"], threads=1),
                tmp_path / "config.yaml")
    assert leaderboard.run_config_fingerprint(tmp_path) == leaderboard.config_fingerprint(params, 0)
    assert leaderboard.run_config_fingerprint(tmp_path / "nothing") is None
