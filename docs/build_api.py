"""Build ebmlab's API reference from its docstrings with pdoc (offline): ``make docs`` runs
``python docs/build_api.py docs/api`` and writes ``docs/api/index.html`` (git-ignored).

Every module of the package is documented (``ebmlab.__main__`` excepted: importing it runs the CLI),
also those a package's ``__all__`` leaves out; ``ebmlab.train``, ``ebmlab.load`` and ``ebmlab.Run``,
which the package imports lazily, are resolved first so the top page shows them.
"""
from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

import ebmlab


def modules() -> list[str]:
    """Every importable module name of the package, sorted, without ``ebmlab.__main__``."""
    names = [m.name for m in pkgutil.walk_packages(ebmlab.__path__, "ebmlab.")]
    return ["ebmlab", *sorted(n for n in names if not n.endswith("__main__"))]


def main(out: str = "docs/api", *names: str) -> int:
    """Write the reference of ``names`` (default: every module) to ``out``."""
    warnings.filterwarnings("ignore", category=UserWarning, module="pdoc")  # NamedTuple forward references
    for name in ebmlab._API:  # the lazy facade: make its names real attributes for pdoc
        setattr(ebmlab, name, getattr(ebmlab, name))
    pdoc.render.configure(docformat="restructuredtext", show_source=True, search=True,
                          footer_text=f"ebmlab {ebmlab.__version__}")
    todo = list(names) or modules()
    pdoc.pdoc(*todo, output_directory=Path(out))
    print(f"wrote {Path(out) / 'index.html'} ({len(todo)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
