"""The default thread policy (issue 19, item 1): ``train.threads`` wins; otherwise one thread per core
that nothing else is using, at least one, at most torch's default; torch's default on a GPU."""
import torch

from ebmlab.training.loop import busy_elsewhere, choose_threads

CPU = torch.device("cpu")


def test_explicit_threads_win():
    assert choose_threads(3, "vector", CPU, load=5.0, cores=2) == 3


def test_auto_uses_the_idle_cores_only(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert choose_threads(None, "vector", CPU, load=0.0, cores=8) == 8     # idle machine: all of them
    assert choose_threads(None, "image", CPU, load=2.0, cores=8) == 6      # two busy processes
    assert choose_threads(None, "vector", CPU, load=2.0, cores=2) == 1     # a shared 2-core machine
    assert choose_threads(None, "vector", CPU, load=30.0, cores=8) == 1    # never below one
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert choose_threads(None, "vector", CPU, load=0.0, cores=8) == 2     # never above torch's default


def test_gpu_keeps_torch_default():
    assert choose_threads(None, "image", torch.device("cuda"), load=0.0, cores=4) is None


def test_busy_elsewhere_is_a_small_non_negative_count():
    assert 0.0 <= busy_elsewhere() < 1000


def test_a_resumed_auto_run_takes_its_checkpoints_thread_count(tmp_path, monkeypatch):
    """``train.threads: null`` chose the idle cores again on --resume, so a convolution's reductions (summed per
    thread) could differ from the uninterrupted run's; the checkpoint now records the count and resume takes it."""
    import json

    from ebmlab.training import loop
    from ebmlab.training.config import load_config
    from ebmlab.training.loop import resume_threads
    from tests.runs import fit_in

    before = torch.get_num_threads()
    try:
        sets = ["train.steps=2", "train.checkpoint_every=2", "model.width=8", "data.n_train=256", "eval.plots=false",
                "train.progress=false", "eval.n_samples=16"]
        monkeypatch.setattr(loop, "choose_threads", lambda *a, **k: 1)
        fit_in(tmp_path, load_config(None, sets))
        side = json.loads((tmp_path / "checkpoints" / "step_00000002.json").read_text())
        assert side["threads"] == 1
        monkeypatch.setattr(loop, "choose_threads", lambda *a, **k: 2)  # busier or idler today
        fit_in(tmp_path, load_config(None, [*sets[1:], "train.steps=4"]), resume=True)
        assert torch.get_num_threads() == 1  # the checkpoint's count, not today's
        resume_threads(3, CPU, 1)  # an explicit train.threads wins (it was set at start)
        assert torch.get_num_threads() == 1
        resume_threads(None, torch.device("cuda"), 1)  # GPU runs: nothing to do
    finally:
        torch.set_num_threads(before)


def test_an_auto_run_follows_the_idle_cores_while_it_trains(monkeypatch):
    """A count chosen at start held while other work started beside the run: two threads on a 2-core machine
    that a test run then shared went from 13 to 1.2 updates per second. The governor re-counts every ``every``
    seconds (and not in between) and sets the new count; an explicit train.threads and a GPU run are left alone."""
    from ebmlab.training import threads as th

    now = [0.0]
    idle = [2]
    monkeypatch.setattr(th, "idle_threads", lambda most, *a: min(most, idle[0]))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        gov = th.ThreadGovernor(None, CPU, most=2, every=10.0, clock=lambda: now[0])
        idle[0] = 1                      # another process starts
        now[0] = 9.9
        gov.tick()
        assert torch.get_num_threads() == 2 and gov.changes == 0   # not yet: 10 s between counts
        now[0] = 10.0
        gov.tick()
        assert torch.get_num_threads() == 1 and gov.changes == 1
        idle[0] = 2                      # it ended
        now[0] = 15.0
        gov.tick()
        assert torch.get_num_threads() == 1                        # the next count is due at 20 s
        now[0] = 20.0
        gov.tick()
        assert torch.get_num_threads() == 2 and gov.changes == 2
        for fixed in (th.ThreadGovernor(2, CPU, most=2, every=10.0, clock=lambda: now[0]),
                      th.ThreadGovernor(None, torch.device("cuda"), most=2, every=10.0, clock=lambda: now[0])):
            idle[0] = 1
            now[0] += 100.0
            fixed.tick()
            assert torch.get_num_threads() == 2 and fixed.changes == 0
    finally:
        torch.set_num_threads(before)


def test_the_training_loop_consults_the_governor_once_per_update(tmp_path, monkeypatch):
    from ebmlab.training import threads as th
    from ebmlab.training.config import load_config
    from tests.runs import fit_in

    calls = []
    monkeypatch.setattr(th.ThreadGovernor, "tick", lambda self: calls.append(self.active))
    before = torch.get_num_threads()
    try:
        fit_in(tmp_path, load_config(None, ["train.steps=3", "model.width=8", "data.n_train=256", "eval.plots=false",
                                            "train.progress=false", "eval.n_samples=16"]))
    finally:
        torch.set_num_threads(before)
    assert calls == [True, True, True]  # train.threads: null (auto) on the CPU
