"""Helpers for the tests that drive ``ebmlab`` in-process (``ebmlab.cli.main``) on copies of tiny runs."""
from __future__ import annotations

import shutil
from pathlib import Path

from ebmlab.cli import main


def sets(options, *extra: str) -> list[str]:
    """``--set KEY=VALUE`` for each of ``options`` and ``extra`` (later ones win)."""
    return [a for o in (*options, *extra) for a in ("--set", o)]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``ebmlab ARGV`` run in this process."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def copy_into_cwd(run: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of ``run`` at ``tmp_path/run``, with ``tmp_path`` the working directory."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"
