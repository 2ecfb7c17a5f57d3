"""A stopped experiment stops its workers (``cells._workers_stop_with``): SIGTERM or Ctrl-C to the process
that runs the cells must not leave worker processes training the queued cells into their directories."""
import os
import signal
import subprocess
import sys
import textwrap
import time

CELLS = '''
import os, sys, time
from pathlib import Path
from ebmlab.experiments import claims

def slow(params, seed, run_dir):
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "pid").write_text(str(os.getpid()))
    time.sleep(60)
    (Path(run_dir) / "finished").write_text("yes")
    return {"m": 1.0, "step": 1}

if __name__ == "__main__":
    claims.run_cells(Path(sys.argv[1]), [claims.Cell("a", s, slow, {}) for s in range(4)], jobs=2)
'''


def _alive(pid: int) -> bool:
    try:  # (an orphaned worker can be reaped between the two calls: then it is not alive either)
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:  # a zombie is not running
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # (the state follows the command's closing paren)
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_sigterm_stops_the_workers(tmp_path):
    (tmp_path / "cells_mod.py").write_text(textwrap.dedent(CELLS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    pid_files = [tmp_path / "out" / "cells" / "a" / f"seed{s}" / "pid" for s in (0, 1)]
    with subprocess.Popen([sys.executable, str(tmp_path / "cells_mod.py"), str(tmp_path / "out")], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:  # (the with closes the pipe)
        deadline = time.time() + 60
        while not all(p.exists() and p.read_text() for p in pid_files):
            assert time.time() < deadline and proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.2)
        workers = [int(p.read_text()) for p in pid_files]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
    assert not any((tmp_path / "out" / "cells" / "a" / f"seed{s}").exists() for s in (2, 3))  # queued: never run
    assert not list((tmp_path / "out").rglob("finished"))
