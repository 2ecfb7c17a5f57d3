"""ebmlab reads and writes its text files as UTF-8 whatever the locale, and its command line never dies on a
character its standard output cannot encode.

Python's text I/O without ``encoding=`` uses the locale's encoding: ASCII under ``LC_ALL=C`` (without Python's
locale coercion), cp1252 on Windows. The shipped configs and a user's may carry UTF-8 comments, and the
experiments' ``results.md`` carries ``±`` and ``‖∇L‖``: under such a locale a config read failed ("is not UTF-8
text"), and an experiment's report raised ``UnicodeEncodeError`` when written, after its training.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "src" / "ebmlab", ROOT / "benchmarks", ROOT / "docs" / "build_api.py"]
TEXT_CALLS = ("read_text", "write_text")
NOT_FILES = ("os", "tarfile", "zipfile", "gzip", "Image")  # binary opens (``os.open`` takes flags)


def _mode(call: ast.Call) -> str | None:
    """The literal mode of an ``open(path, mode)`` / ``path.open(mode)`` call ("r" when absent; None: not a literal)."""
    for kw in call.keywords:
        if kw.arg == "mode":
            return kw.value.value if isinstance(kw.value, ast.Constant) else None
    pos = 1 if isinstance(call.func, ast.Name) else 0  # open(path, mode) / Path(...).open(mode)
    if len(call.args) > pos:
        arg = call.args[pos]
        return arg.value if isinstance(arg, ast.Constant) else None
    return "r"


def unnamed_encodings(path: Path) -> list[int]:
    """The lines of ``path`` with a text-mode file read or write that names no ``encoding=``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or any(kw.arg == "encoding" for kw in node.keywords):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
        on_module = isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in NOT_FILES
        if name in TEXT_CALLS or (name == "open" and not on_module and "b" not in str(_mode(node))):
            found.append(node.lineno)
    return sorted(found)


def test_the_scan_sees_a_text_call_without_its_encoding(tmp_path):
    """The check is real: it flags the forms it must and passes the forms it must not."""
    src = tmp_path / "m.py"
    src.write_text(textwrap.dedent("""\
        from pathlib import Path
        import os
        Path("a").read_text()
        Path("a").write_text("x", encoding="utf-8")
        open("a")
        open("a", "w", encoding="utf-8")
        open("a", "rb")
        os.open("a", os.O_RDONLY)
        p = Path("a")
        with p.open("a") as fh: pass
        p.write_text("y")
        """), encoding="utf-8")
    assert unnamed_encodings(src) == [3, 5, 10, 11]


def test_every_shipped_text_read_and_write_names_its_encoding():
    files = [p for root in SHIPPED for p in ([root] if root.is_file() else sorted(root.rglob("*.py")))]
    assert len(files) > 50
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in files for line in unnamed_encodings(p)]
    assert not bad, "text file I/O without encoding= (the locale's, not UTF-8):\n" + "\n".join(bad)


def _ascii_env() -> dict:
    """The environment of a Python whose locale encoding is ASCII: ``LC_ALL=C``, no coercion, no UTF-8 mode."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    return env


def _ascii_locale_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose locale encoding is ASCII (``LC_ALL=C``, no coercion, no UTF-8 mode)."""
    env = _ascii_env()
    probe = subprocess.run([sys.executable, "-c", "import locale; print(locale.getpreferredencoding(False))"],
                           env=env, capture_output=True, text=True, check=True)
    if "utf" in probe.stdout.lower().replace("-", ""):
        pytest.skip(f"this platform's C locale is UTF-8 ({probe.stdout.strip()}): nothing to show")
    (cwd / "run.py").write_text(code, encoding="utf-8")  # (a file: -c cannot carry non-ASCII under this locale)
    return subprocess.run([sys.executable, "run.py"], env=env, cwd=cwd, capture_output=True, timeout=120)


def test_a_utf8_config_loads_under_an_ascii_locale(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  steps: 7   # σ, the noise's scale\n", encoding="utf-8")
    r = _ascii_locale_python("from ebmlab.training.config import load_config\n"
                             "print(load_config('c.yaml', []).train.steps)", tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout.strip() == b"7"


def test_an_experiment_report_is_written_and_printed_under_an_ascii_locale(tmp_path):
    """``claims.write_claim_results`` (every paper experiment's report) writes results.md as UTF-8, and prints it; the
    command line's stdout writes what it cannot encode as escapes (``cli._tolerant_stdout``) instead of raising."""
    r = _ascii_locale_python(
        "from pathlib import Path\n"
        "from ebmlab import cli\n"
        "from ebmlab.experiments.claims import write_claim_results\n"
        "cli._tolerant_stdout()\n"
        "write_claim_results(Path('.'), '001', 'AUROC 0.9 ± 0.01; median ‖∇L_KL‖/‖∇L_CD‖ ≤ 1', {}, [], [0], {})",
        tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    md = (tmp_path / "results.md").read_bytes().decode("utf-8")
    assert "0.9 ± 0.01; median ‖∇L_KL‖/‖∇L_CD‖ ≤ 1" in md
    assert b"0.9 \\xb1 0.01; median \\u2016\\u2207L_KL\\u2016" in r.stdout


def test_the_tolerant_stdout_keeps_a_command_lines_undecodable_bytes(tmp_path):
    """A file name given on the command line in another encoding reaches Python as surrogates
    (``surrogateescape``); the command line prints it back as the same bytes, not as escapes."""
    code = ("import sys\nfrom ebmlab import cli\ncli._tolerant_stdout()\n"
                "print('wrote', sys.argv[-1], '±')")
    script = tmp_path / "say.py"
    script.write_text(code, encoding="utf-8")
    r = subprocess.run([sys.executable, str(script), os.fsdecode(b"caf\xc3\xa9.npy")], env=_ascii_env(), capture_output=True,
                       timeout=120)
    if r.returncode == 0 and b"\xc2\xb1" in r.stdout:
        pytest.skip("this platform's C locale is UTF-8: nothing to show")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout == b"wrote caf\xc3\xa9.npy \\xb1\n"
