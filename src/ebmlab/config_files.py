"""Reading config files: the YAML reader (``yaml_load``: ``yaml.safe_load`` rules plus floats written
without a dot, minus aliases) and the configs shipped inside the package (``src/ebmlab/configs/*.yaml``,
package data read with ``importlib.resources``), found by file path or by name (``resolve_config``).
``config.py`` builds and validates a ``Config`` from what these return.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml

from ebmlab.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "config_description", "read_config_file", "resolve_config", "shipped_config_text",
           "shipped_configs", "yaml_load"]


# ----- YAML -----------------------------------------------------------------------------------------------
# YAML 1.1 (PyYAML) reads 1e-4 as a string (its floats need a dot); YAML 1.2 and every user read it as a
# number. This resolver adds the dot-less exponent form. Aliases (*name) are refused: a 400-byte file of
# nested aliases expands to gigabytes ("billion laughs"), and a config never needs them.
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")
MAX_CONFIG_BYTES = 1_000_000


class _NoAlias(Exception):
    pass


class _DuplicateKey(Exception):
    pass


class _Sexagesimal(Exception):
    pass


_YAML11_NUMBER = re.compile(r"^[-+]?(0[0-9_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)$")  # 010 (octal), 1:30 (base 60)


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):  # (an anchor on nothing: null)
            raise _NoAlias(event.anchor)
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node):
        """YAML 1.1's octal (010 is 8) and base-60 (1:30 is 90) integers are refused: YAML 1.2 and every reader
        take 010 for ten and 1:30 for text."""
        if _YAML11_NUMBER.match(self.construct_scalar(node)):
            raise _Sexagesimal(self.construct_scalar(node), node.start_mark.line + 1)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        if _YAML11_NUMBER.match(self.construct_scalar(node)):
            raise _Sexagesimal(self.construct_scalar(node), node.start_mark.line + 1)
        return super().construct_yaml_float(node)

    def construct_mapping(self, node, deep=False):
        """A key given twice in one mapping is refused (YAML forbids it; PyYAML keeps the last one silently, so
        ``method:`` written twice trained the second section's method without a word)."""
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # (an unhashable key: construct_mapping says so)
                if key in seen:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def yaml_load(text: str, where: str):
    """``text`` parsed by ``yaml.safe_load`` rules (plus 1e-4 floats, minus aliases); ConfigError naming
    ``where`` for anything that is not plain YAML."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} is {len(text)} characters, more than a config may hold ({MAX_CONFIG_BYTES})")
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no python tags
    except _NoAlias as exc:
        raise ConfigError(f"{where} uses a YAML anchor or alias (&{exc.args[0]} / *{exc.args[0]}); ebmlab configs "
                          "do not accept anchors and aliases, write the values out") from None
    except _Sexagesimal as exc:
        raise ConfigError(f"{where} gives {exc.args[0]!r} (line {exc.args[1]}), which YAML 1.1 reads as an octal or "
                          "base-60 number; write the number without a leading zero, or quote it if it is text") from None
    except _DuplicateKey as exc:
        raise ConfigError(f"{where} gives the key {exc.args[0]!r} twice in one mapping (again on line {exc.args[1]}); "
                          "keep one of them") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML{_yaml_problem(exc)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. an invalid timestamp
        raise ConfigError(f"{where} holds a value YAML cannot read ({' '.join(str(exc).split())})") from None


def _yaml_problem(exc: Exception) -> str:
    """Where and what, in the file's own line numbers: ' at line 3, column 6: expected ...' (PyYAML's text
    quotes the parser state and the source, which is no help in one sentence)."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return f" ({' '.join(str(exc).split())})"
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    started = f" that starts at line {cmark.line + 1}, column {cmark.column + 1}" if cmark is not None else ""
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context}{started})" if context else "")


# ----- shipped configs (package data) ------------------------------------------------------------------
def _shipped_dir():
    return resources.files("ebmlab") / "configs"


def shipped_configs() -> list[str]:
    """Names (file stems) of the configs shipped in ``ebmlab/configs/``, sorted."""
    return sorted(p.name[:-5] for p in _shipped_dir().iterdir() if p.name.endswith(".yaml"))


def shipped_config_text(name: str) -> str:
    """The YAML text of a shipped config; ``ConfigError`` listing the names if there is none."""
    names = shipped_configs()
    if name not in names:
        raise ConfigError(f"no shipped config named {name!r}; available configs are: {', '.join(names)}")
    return (_shipped_dir() / f"{name}.yaml").read_text(encoding="utf-8")


def config_description(text: str) -> str:
    """The first comment line of a YAML text, without its ``#`` (empty if the file starts otherwise)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip().rstrip(",:")
        if line:
            break
    return ""


def resolve_config(path_or_name: str | Path) -> tuple[str, str]:
    """(where, YAML text) of a config: an existing file, else a shipped config by name ("default",
    "paper004_rings_hybrid"). Anything else is a ``ConfigError`` that lists the shipped names."""
    p = Path(path_or_name).expanduser()
    if p.is_file():
        try:
            if p.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"config file {str(p)!r} is {p.stat().st_size} bytes, more than a config may hold "
                                  f"({MAX_CONFIG_BYTES})")
            return str(p), p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text; pass a YAML file") from None
    if p.is_dir():
        raise ConfigError(f"--config {str(p)!r} is a directory; pass a YAML file or a shipped config's name")
    text = str(path_or_name)
    names = shipped_configs()
    looks_like_path = p.name != text or p.suffix.lower() in (".yaml", ".yml")
    if not looks_like_path and text in names:
        return f"{text} (shipped)", shipped_config_text(text)
    what = f"config file {text!r} does not exist" if looks_like_path else \
        f"{text!r} is neither a config file nor a shipped config"
    raise ConfigError(f"{what}; the shipped configs (pass a name, e.g. --config {names[0]}) are: "
                      f"{', '.join(names)}")


def read_config_file(path_or_name: str | Path) -> dict:
    """The raw mapping of sections of a config file or shipped config (see ``resolve_config``)."""
    where, text = resolve_config(path_or_name)
    raw = yaml_load(text, f"config {where!r}") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {where!r} must hold a mapping of sections (data, model, method, train, eval), "
                          f"got a {type(raw).__name__}")
    return raw
