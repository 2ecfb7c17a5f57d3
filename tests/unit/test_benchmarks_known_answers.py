"""Known answers for ``benchmarks/`` (mutation round 16): the harness's interleaving, anchoring, warm-up sizing and
statistics on a scripted clock; ``bench_sampler``'s pass counter, lean reference, warnings and issue-19 verdicts on
fabricated numbers; ``bench_scaling``'s and ``bench_threads``' figures from stand-in measurements. No benchmark is
run and nothing is timed: every clock here is a fake that advances by scripted amounts."""
from __future__ import annotations

import copy
import json
import subprocess
import types

import numpy as np
import pytest
import torch

from ebmlab.energies.base import energy_and_grad
from ebmlab.training.config import load_config
from tests.scripts import script_module


def _script(path: str, name: str):
    """A module-scoped fixture that loads the benchmark script ``path`` as module ``name``."""
    @pytest.fixture(scope="module")
    def fixture():
        with script_module(path, name) as module:
            yield module
    return fixture


harness = _script("benchmarks/_harness.py", "ebmlab_bench_harness")
sampler = _script("benchmarks/bench_sampler.py", "ebmlab_bench_sampler")
scaling = _script("benchmarks/bench_scaling.py", "ebmlab_bench_scaling")
threads = _script("benchmarks/bench_threads.py", "ebmlab_bench_threads")


# ----- the harness on a scripted clock ------------------------------------------------------------------------
class World:
    """A fake process: each stand-in call advances the CPU clock by its cost and the wall clock by 3x that + 1 ms
    (a loaded machine); ``log`` records the calls in order."""

    def __init__(self, harness, monkeypatch):
        self.cpu = self.wall = 0.0
        self.log = []
        monkeypatch.setitem(harness.CLOCKS, "process", lambda: self.cpu)
        monkeypatch.setattr(harness, "time", types.SimpleNamespace(perf_counter=lambda: self.wall))

    def item(self, name, costs):
        """A callable whose i-th call costs ``costs(i)`` CPU seconds."""
        count = [0]

        def fn():
            c = costs(count[0])
            count[0] += 1
            self.cpu += c
            self.wall += 3 * c + 1e-3
            self.log.append(name)
        return fn


def _fixed(c):
    return lambda i: c


def test_quartiles_are_the_inclusive_ones_in_order(harness):
    assert harness.quartiles([5.0, 1.0, 4.0, 2.0, 3.0]) == {"median": 3.0, "q1": 2.0, "q3": 4.0}
    assert harness.quartiles([7.0]) == {"median": 7.0, "q1": 7.0, "q3": 7.0}
    assert harness.fmt_q({"median": 1.0, "q1": 0.5, "q3": 2.0}, 1) == "1.0 [0.5-2.0]"


def test_blocks_rotate_the_items_by_one_and_put_a_floor_stretch_before_and_after_each(harness, monkeypatch):
    w = World(harness, monkeypatch)
    items = [harness.Item(n, w.item(n, _fixed(1e-3)), reps=1, warmup=0) for n in ("A", "B", "C", "F")]
    harness.run_interleaved(items, blocks=5, item_s=1.0, anchor="F")
    blocks = [w.log[i * 7:(i + 1) * 7] for i in range(5)]
    orders = ["ABC", "BCA", "CAB", "ABC", "BCA"]
    assert blocks == [["F", o[0], "F", o[1], "F", o[2], "F"] for o in orders]


def test_without_an_anchor_every_item_is_timed_once_per_block_in_rotated_order(harness, monkeypatch):
    w = World(harness, monkeypatch)
    items = [harness.Item(n, w.item(n, _fixed(1e-3)), reps=1, warmup=0) for n in ("A", "B")]
    meas = harness.run_interleaved(items, blocks=3, item_s=1.0)
    assert w.log == list("ABBAAB") and meas["rel"] is None


def test_each_item_is_divided_by_the_mean_of_the_two_floor_stretches_around_it(harness, monkeypatch):
    w = World(harness, monkeypatch)
    floor_costs = [1e-3, 3e-3, 2e-3]  # the floor's three stretches of the block: before A, after A, after B
    items = [harness.Item("A", w.item("A", _fixed(8e-3)), per=2.0, reps=2, warmup=0),
             harness.Item("B", w.item("B", _fixed(6e-3)), reps=1, warmup=0),
             harness.Item("F", w.item("F", lambda i: floor_costs[i]), reps=1, warmup=0)]
    meas = harness.run_interleaved(items, blocks=1, item_s=1.0, anchor="F")
    # A: 2 calls of 8 ms over 2 x per=2 units -> 4 ms CPU per unit; wall 2 x (3 * 8 + 1) ms / 4 = 12.5 ms per unit
    assert meas["times"]["A"]["cpu"] == pytest.approx([4e-3]) and meas["times"]["A"]["wall"] == pytest.approx([12.5e-3])
    assert meas["times"]["B"]["cpu"] == pytest.approx([6e-3]) and meas["times"]["B"]["wall"] == pytest.approx([19e-3])
    assert meas["rel"]["A"]["cpu"] == pytest.approx([4e-3 / 2e-3])      # floors 1 and 3 ms around it
    assert meas["rel"]["B"]["cpu"] == pytest.approx([6e-3 / 2.5e-3])    # floors 3 and 2 ms
    assert meas["rel"]["A"]["wall"] == pytest.approx([12.5e-3 / 7e-3])  # floor walls 4 and 10 ms
    # the floor's own time is the mean of all its stretches in the block, and its ratio to itself is 1
    assert meas["times"]["F"]["cpu"] == pytest.approx([2e-3]) and meas["rel"]["F"]["cpu"] == [1.0]
    st = harness.time_stats(meas, "A")
    assert st["cpu"]["median"] == pytest.approx(4e-3) and st["wall"]["median"] == pytest.approx(12.5e-3)


def test_warm_up_sizes_each_stretch_from_the_last_warm_call_and_the_floor_to_its_own_length(harness, monkeypatch):
    w = World(harness, monkeypatch)
    unit = 2.0 ** -10
    cold_then_warm = lambda i: 10 * unit if i == 0 else unit  # noqa: E731
    items = [harness.Item("A", w.item("A", cold_then_warm), warmup=2),
             harness.Item("F", w.item("F", cold_then_warm), warmup=2),
             harness.Item("P", w.item("P", _fixed(unit)), reps=7, warmup=1)]
    meas = harness.run_interleaved(items, blocks=1, item_s=4.5 * unit, anchor="F", anchor_s=2.5 * unit)
    # from the warm call (1 unit): ceil(4.5) = 5 calls of A, ceil(2.5) = 3 of the floor; a set reps is kept
    assert meas["reps"] == {"A": 5, "F": 3, "P": 7}
    assert w.log[:5] == ["A", "A", "F", "F", "P"]  # the warm-up calls, untimed, before any block


def test_the_collector_runs_between_blocks_and_is_off_within_them(harness, monkeypatch):
    w = World(harness, monkeypatch)
    state = {"on": True}
    events = []
    fake_gc = types.SimpleNamespace(collect=lambda: events.append("collect"),
                                    disable=lambda: state.update(on=False), enable=lambda: state.update(on=True))
    monkeypatch.setattr(harness, "gc", fake_gc)
    fn = w.item("A", _fixed(1e-3))
    items = [harness.Item("A", lambda: (fn(), events.append(state["on"])), reps=1, warmup=0)]
    harness.run_interleaved(items, blocks=2, item_s=1.0)
    assert events == ["collect", False, "collect", False] and state["on"]


def test_ratios_are_formed_per_block_from_the_anchored_values(harness):
    meas = {"times": {"a": {"cpu": [9.0, 9.0, 9.0], "wall": [9.0, 9.0, 9.0]},
                      "b": {"cpu": [1.0, 1.0, 1.0], "wall": [1.0, 1.0, 1.0]}},
            "rel": {"a": {"cpu": [2.0, 4.0, 6.0], "wall": [3.0, 3.0, 3.0]},
                    "b": {"cpu": [1.0, 2.0, 1.0], "wall": [1.0, 1.0, 1.0]}}}
    r = harness.ratio_stats(meas, "a", "b", den_scale=2.0)
    assert r["cpu"] == {"median": 1.0, "q1": 1.0, "q3": 2.0}  # per block 1, 1, 3
    assert r["wall"]["median"] == 1.5
    meas["rel"] = None  # without an anchor: the times themselves
    assert harness.ratio_stats(meas, "a", "b")["cpu"]["median"] == 9.0


def test_the_source_note_flags_uncommitted_changes_under_src(harness, monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        out = "abc1234\n" if "rev-parse" in cmd else porcelain
        return types.SimpleNamespace(stdout=out)

    monkeypatch.setattr(subprocess, "run", fake_run)
    porcelain = " M src/ebmlab/x.py\n"
    assert harness.source_note() == {"commit": "abc1234", "src_modified": True}
    porcelain = ""
    assert harness.source_note() == {"commit": "abc1234", "src_modified": False}
    assert ["git", "status", "--porcelain", "src"] in calls


# ----- bench_sampler: the pass counter and the lean reference -------------------------------------------------
def _tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.SiLU(), torch.nn.Linear(4, 1), torch.nn.Flatten(0))


def test_the_counter_counts_forwards_only_and_calls_frozen_only_when_every_one_was(sampler):
    net, x = _tiny(), torch.randn(5, 2)

    def two_forwards_one_backward():
        net(x)
        net(x.requires_grad_(True)).sum().backward()

    assert sampler.count_forwards(net, two_forwards_one_backward) == (2, False)
    assert sampler.count_forwards(net, two_forwards_one_backward) == (2, False)
    assert not net._forward_pre_hooks  # the counting hook is gone: the timed calls do not pay for it
    frozen = copy.deepcopy(net).requires_grad_(False)
    assert sampler.count_forwards(frozen, lambda: energy_and_grad(frozen, x)) == (1, True)

    def one_frozen_one_not():
        net.requires_grad_(False)
        net(x)
        net.requires_grad_(True)
        net(x)

    assert sampler.count_forwards(net, one_frozen_one_not) == (2, False)
    assert sampler.count_forwards(net, lambda: None) == (0, False)


def _cfg(*extra):
    return load_config(None, ["data.name=8gaussians", "model.width=8", "model.depth=1", *extra])


def _lean(sampler, cfg, seed=0):
    from ebmlab.config import ModelConfig
    from ebmlab.energies.build import build_energy
    torch.manual_seed(seed)
    energy = build_energy(ModelConfig(width=8, depth=1), (2,))
    torch.nn.init.normal_(energy.out.weight)  # not the tiny default head
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    return sampler.LeanReference(energy, cfg, x, torch.Generator().manual_seed(2))


def test_the_lean_reference_makes_44_forwards_and_42_input_backwards_for_the_default(sampler):
    ref = _lean(sampler, _cfg())
    assert (ref.n_data, ref.n_noise) == (10, 30)
    assert ref.input_backwards == 1 + 10 + 31 == 42 and ref.forwards == 44
    assert sampler.count_forwards(ref.energy, ref) == (44, False)
    ref = _lean(sampler, _cfg("method.n_steps=5", "method.n_steps_data=null"))  # data chain as long as n_steps
    assert (ref.input_backwards, sampler.count_forwards(ref.energy, ref)[0]) == (1 + 5 + 6, 1 + 5 + 6 + 2)


def test_the_lean_reference_backpropagates_the_hybrid_loss_with_its_energy_l2(sampler, monkeypatch):
    cfg = _cfg("method.energy_l2=0.5")
    ref = _lean(sampler, cfg)
    x, xn, lam, a = ref.x, ref.x_noise, cfg.method.lam, 0.5
    params = list(ref.energy.parameters())
    e_x, e_n = ref.energy(x), ref.energy(xn)
    term = lambda p, n: p.mean() - n.mean() + a * (p.pow(2).mean() + n.pow(2).mean())  # noqa: E731
    want = torch.autograd.grad(lam * term(e_x, e_x) + term(e_x, e_n), params)
    seen = []
    monkeypatch.setattr(ref.opt, "step", lambda: seen.append([p.grad.clone() for p in params]))
    ref()
    assert all(torch.allclose(g, w, atol=1e-5, rtol=1e-4) for g, w in zip(seen[0], want))


def test_the_trainer_reference_moves_its_ema_shadow_by_one_minus_the_decay(sampler):
    ref = _lean(sampler, _cfg("train.ema=0.75"))
    old = [s.clone() for s in ref.shadow]
    ref(trainer=True)
    new = [p.detach() for p in ref.params]
    assert all(torch.allclose(s, 0.75 * o + 0.25 * n) for s, o, n in zip(ref.shadow, old, new))


def _frozen_forwards(module, fn):
    """(forwards, those with every parameter frozen) during ``fn()``."""
    seen = []
    handle = module.register_forward_pre_hook(lambda mod, a: seen.append(not any(p.requires_grad
                                                                                   for p in mod.parameters())))
    try:
        fn()
    finally:
        handle.remove()
    return len(seen), sum(seen)


def test_the_lean_reference_makes_the_updates_passes_with_its_chains_frozen_as_the_objectives(sampler, tmp_path):
    spec = dict(sampler.ENERGIES["small_mlp"], overrides=sampler.ENERGIES["small_mlp"]["overrides"] + ["model.width=8"])
    items, modules, n_fb, cfg = sampler.training_items(spec, 4, torch.device("cpu"), 1, False, tmp_path)
    assert n_fb == 42 and [it.name for it in items] == ["update", "update_ref"]
    # 44 forwards each; the chains' 10 + 31 run with the parameters frozen (no weight-side autograd state), the
    # loss forwards with them trainable: the reference must not pay for weight-side state the update does not
    assert _frozen_forwards(modules["update"], items[0].fn) == (44, 41)
    assert _frozen_forwards(modules["update_ref"], items[1].fn) == (44, 41)
    assert all(p.requires_grad for p in modules["update_ref"].parameters())  # and restored afterwards


# ----- bench_sampler: one case with a stand-in measurement -----------------------------------------------------
def test_a_case_anchors_on_a_tenth_of_the_typical_item_and_divides_by_the_right_rows(sampler, monkeypatch, tmp_path):
    first = {"floor": 0.001, "floor_frozen": 0.001, "ebmlab_langevin": 0.25, "ebmlab_mala": 0.3,
             "ebmlab_langevin_nofinal": 0.25, "update": 0.5, "update_ref": 0.45}
    ticks = []
    for v in first.values():
        ticks += [0.0, v]
    clock = iter(ticks)
    monkeypatch.setattr(sampler, "time", types.SimpleNamespace(process_time=lambda: next(clock), perf_counter=lambda: 0.0))
    rel = {"floor": 1.0, "floor_frozen": 0.8, "ebmlab_langevin": 1.2, "ebmlab_mala": 1.4,
           "ebmlab_langevin_nofinal": 1.1, "update": 63.0, "update_ref": 50.0}
    seen = {}

    def fake_run(items, **kw):
        seen.update(kw, items={it.name: (it.reps, it.warmup) for it in items})
        return {"times": {n: {"cpu": [1e-3] * 3, "wall": [2e-3] * 3} for n in rel},
                "rel": {n: {"cpu": [v] * 3, "wall": [v] * 3} for n, v in rel.items()},
                "reps": {n: 1 for n in rel}}

    monkeypatch.setattr(sampler, "run_interleaved", fake_run)
    args = types.SimpleNamespace(device="cpu", full=False, steps=2, step_size=0.01, no_peers=True, no_train=False,
                                 no_trainer=True, set=["model.width=8"], threads=1, item_ms=50.0, anchor_ms=20.0,
                                 blocks=3, clock="process")
    case = sampler.measure_case("small_mlp", 4, args, {}, tmp_path)
    # the middle first call of the seven is 0.25 s: the floor stretches last a tenth of it, 25 ms > 20 ms
    assert seen["anchor"] == "floor" and seen["anchor_s"] == pytest.approx(0.025)
    assert seen["items"]["floor"] == (0, None) and seen["items"]["ebmlab_mala"] == (1, 0)  # slower than 50 ms
    r = case["ratios"]
    assert r["ebmlab_langevin"]["cpu"]["median"] == pytest.approx(1.2)
    assert r["ebmlab_langevin"]["over_frozen"]["cpu"]["median"] == pytest.approx(1.2 / 0.8)
    assert r["update/ref"]["cpu"]["median"] == pytest.approx(63 / 50)
    assert r["update/floors"]["cpu"]["median"] == pytest.approx(63 / 42) and case["update_ref_input_backwards"] == 42
    assert case["passes"]["ebmlab_langevin"] == pytest.approx(3 / 2) and case["passes"]["ebmlab_langevin_nofinal"] == 1
    assert case["passes"]["update_ref"] == 44
    fp = case["frozen_params"]  # ebmlab's chains freeze the network while they sample; the floor and updates do not
    assert (fp["floor"], fp["floor_frozen"], fp["ebmlab_mala"], fp["update"], fp["update_ref"]) == (False, True, True, False, False)


# ----- bench_sampler: warnings and verdicts on fabricated numbers ----------------------------------------------
def _q(med, q1=None, q3=None):
    return {"median": med, "q1": med if q1 is None else q1, "q3": med if q3 is None else q3}


def _row(cpu, over_frozen, wall=None, q1=None, q3=None):
    wall = cpu if wall is None else wall
    return {"cpu": _q(cpu, q1, q3), "wall": _q(wall), "over_frozen": {"cpu": _q(over_frozen), "wall": _q(over_frozen)}}


def test_a_step_below_the_floor_is_a_broken_measurement_unless_frozen_parameters_explain_it(sampler):
    case = {"ratios": {"ebmlab_langevin": _row(0.97, 0.99), "ebmlab_mala": _row(0.97, 0.985),
                       "ebmkit_langevin": _row(0.9, 0.95)},
            "frozen_params": {"ebmlab_langevin": False, "ebmlab_mala": True, "ebmkit_langevin": True}, "passes": {}}
    warnings, notes = sampler.check_case("k", case)
    broken = [w for w in warnings if "MEASUREMENT IS BROKEN" in w]
    assert [w.split()[1] for w in broken] == ["ebmlab_langevin", "ebmkit_langevin"]  # 0.95 < 0.98 floor_frozen
    assert len(notes) == 1 and "ebmlab_mala" in notes[0]
    assert sum("wall ratio" in w for w in warnings) == 2  # the wall clock below 1 is reported too (not for the note)


def test_a_cpu_ratio_whose_iqr_exceeds_ten_percent_of_its_median_is_flagged_noisy(sampler):
    case = {"ratios": {"ebmlab_langevin": _row(1.2, 1.3, q1=1.14, q3=1.284),   # 12 %
                       "ebmlab_mala": _row(1.3, 1.4, q1=1.25, q3=1.354)},      # 8 %
            "frozen_params": {"ebmlab_langevin": False, "ebmlab_mala": False}, "passes": {}}
    warnings, _ = sampler.check_case("k", case)
    assert len(warnings) == 1 and "ebmlab_langevin CPU ratio is noisy" in warnings[0]


def test_an_update_cheaper_than_its_reference_on_the_cpu_clock_is_reported(sampler):
    passes = {"update": 44, "update_ref": 44}
    low_cpu = {"ratios": {"update/ref": {"cpu": _q(0.95), "wall": _q(1.05)}}, "frozen_params": {}, "passes": passes}
    low_wall = {"ratios": {"update/ref": {"cpu": _q(1.05), "wall": _q(0.95)}}, "frozen_params": {}, "passes": passes}
    assert len(sampler.check_case("k", low_cpu)[0]) == 1 and "0.950 < 1.0" in sampler.check_case("k", low_cpu)[0][0]
    assert sampler.check_case("k", low_wall) == ([], [])


def _goal_case(**cpu):
    return {"ratios": {n: {"cpu": _q(v), "wall": _q(v)} for n, v in cpu.items()}}


def test_the_issue_19_verdicts_use_each_targets_own_bound(sampler):
    cases = {"default_mlp/256": _goal_case(ebmlab_mala=1.12, ebmlab_langevin=1.12, **{"update/ref": 1.12}),
             "small_mlp/256": _goal_case(ebmlab_mala=1.4, ebmlab_langevin=1.4),
             "default_mlp/4096": _goal_case(ebmlab_mala=9.0, ebmlab_langevin=9.0)}
    got = {g["goal"]: (g["value"], g["limit"], g["pass"]) for g in sampler.goals(cases)}
    assert got == {
        "default_mlp/256 ebmlab MALA+controller per step <= 1.15 x floor": (1.12, 1.15, True),
        "default_mlp/256 ebmlab Langevin per step <= 1.1 x floor": (1.12, 1.10, False),
        "default_mlp/256 training update <= 1.10 x its minimal arithmetic": (1.12, 1.10, False),
        "small_mlp/256 ebmlab MALA+controller per step <= 1.5 x floor": (1.4, 1.5, True),
        "small_mlp/256 ebmlab Langevin per step <= 1.3 x floor": (1.4, 1.3, False)}


def test_peer_verdicts_compare_like_with_like_against_the_faster_peer(sampler):
    cases = {"default_mlp/256": _goal_case(ebmlab_mala=1.2, ebmlab_langevin=1.2, ebmlab_langevin_nofinal=1.1,
                                           ebmkit_mala=2.0, ebmkit_mala_adaptive=1.0, ebmkit_langevin=1.06,
                                           torchebm_langevin=1.3),
             "small_mlp/256": _goal_case(ebmlab_mala=1.2, ebmlab_langevin=1.2, ebmkit_langevin=1.3)}
    got = {g["goal"]: (g["value"], g["pass"]) for g in sampler.goals(cases)}
    assert got["default_mlp/256 ebmlab MALA faster than ebmkit_mala"] == (0.6, True)
    assert got["default_mlp/256 ebmlab MALA faster than ebmkit_mala_adaptive"] == (1.2, False)
    key = "default_mlp/256 ebmlab Langevin (ebmlab_langevin_nofinal) within 5 % of the faster peer (ebmkit_langevin)"
    assert got[key] == (round(1.1 / 1.06, 4), True)  # K passes against K; with the K+1-pass row 1.13: FAIL
    # where the K-pass row was not timed, the K+1-pass row is the one compared
    key = "small_mlp/256 ebmlab Langevin (ebmlab_langevin) within 5 % of the faster peer (ebmkit_langevin)"
    assert got[key] == (round(1.2 / 1.3, 4), True)


# ----- bench_scaling --------------------------------------------------------------------------------------------
def test_scaling_points_use_their_data_and_report_floors_per_update_from_the_anchored_values(scaling, monkeypatch,
                                                                                            tmp_path):
    assert scaling.data_overrides(2, tmp_path) == ["data.name=8gaussians"] and scaling.data_overrides(10, tmp_path) == []
    over = scaling.data_overrides(5, tmp_path)
    assert over[0] == "data.name=array" and np.load(over[1].split("=", 1)[1]).shape == (8000, 5)
    Item = scaling.Item
    monkeypatch.setattr(scaling, "point_items", lambda b, d, *a: [Item(f"update/{b}/{d}", None),
                                                                  Item(f"floor/{b}/{d}", None)])
    monkeypatch.setattr(scaling, "anchor_item", lambda device: Item("anchor", None))
    seen = {}

    def fake_run(items, **kw):
        seen.update(kw)
        return {"times": {"update/256/2": {"cpu": [0.0256] * 3, "wall": [0.0512] * 3},
                          "floor/256/2": {"cpu": [0.001] * 3, "wall": [0.002] * 3},
                          "anchor": {"cpu": [0.001] * 3, "wall": [0.002] * 3}},
                "rel": {"update/256/2": {"cpu": [60.0] * 3, "wall": [60.0] * 3},
                        "floor/256/2": {"cpu": [1.5] * 3, "wall": [1.5] * 3},
                        "anchor": {"cpu": [1.0] * 3, "wall": [1.0] * 3}}, "reps": {}}

    monkeypatch.setattr(scaling, "run_interleaved", fake_run)
    res = scaling.main(["--batches", "256", "--dims", "2", "--blocks", "3", "--json", str(tmp_path / "s.json")])
    assert seen["anchor"] == "anchor" and seen["blocks"] == 3
    pt = res["points"]["256/2"]
    assert pt["floors_per_update"]["cpu"]["median"] == 40.0
    assert pt["us_per_sample"]["cpu"] == 100.0 and pt["ms_per_update"]["wall"]["median"] == 51.2
    assert json.loads((tmp_path / "s.json").read_text())["points"] == res["points"]


# ----- bench_threads --------------------------------------------------------------------------------------------
def test_thread_arms_rotate_round_by_round_under_the_busy_processes(threads, monkeypatch):
    runs, busy = [], []
    monkeypatch.setattr(threads, "run_once", lambda t, steps, tmp, late=None: runs.append((t, late)) or 1.0)
    monkeypatch.setattr(threads, "_start_busy", lambda n: busy.append(n) or (lambda: busy.append("stopped")))
    times = threads.measure(5, 4, 2, None)
    assert [t for t, _ in runs] == ["1", "2", None, "2", None, "1", None, "1", "2", "1", "2", None]
    assert busy == [2, "stopped"] and all(len(v) == 4 for v in times.values())


def test_thread_figures_are_medians_over_rounds_and_ratios_to_one_thread(threads, monkeypatch, capsys):
    calls = []
    fake = {"threads=1": [10.0, 12.0, 30.0], "threads=2": [20.0, 22.0, 100.0], "default (auto)": [11.0, 11.0, 11.0]}
    monkeypatch.setattr(threads, "measure", lambda steps, reps, busy, late=None: calls.append((busy, late)) or fake)
    monkeypatch.setattr("sys.argv", ["bench_threads.py", "--phases", "idle", "late", "--busy", "2",
                                     "--late-after", "8"])
    threads.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert calls == [(0, None), (0, (2, 8.0))]
    idle = result["idle"]
    assert idle["median_s"] == {"threads=1": 12.0, "threads=2": 22.0, "default (auto)": 11.0}
    assert idle["ratio_to_threads1"] == {"threads=1": 1.0, "threads=2": 22.0 / 12.0, "default (auto)": 11.0 / 12.0}
    assert "loadavg_start" in result and "loadavg_end" in result


def test_each_arm_is_its_own_train_process_with_its_thread_setting_and_no_inherited_omp_limit(threads, monkeypatch,
                                                                                             tmp_path):
    seen = []

    class FakeProc:
        returncode = 0

        def __init__(self, cmd, env=None, **kw):
            seen.append((cmd, env))

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeProc)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads.run_once("2", 7, str(tmp_path))
    threads.run_once(None, 7, str(tmp_path))
    (cmd, env), (cmd_auto, _) = seen
    assert "OMP_NUM_THREADS" not in env and "MKL_NUM_THREADS" not in env
    assert "train.threads=2" in cmd and "train.steps=7" in cmd
    assert not any(a.startswith("train.threads") for a in cmd_auto)
