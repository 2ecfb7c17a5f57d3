"""Import the optional parts of the library that register themselves (methods, image loaders,
image energies, image metrics) when their module is present. A module that exists but fails to
import raises as usual; only absent modules are skipped."""
from __future__ import annotations

import importlib
import importlib.util


def import_present(package: str, names: list[str]) -> None:
    for name in names:
        full = f"{package}.{name}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full)
