"""Parameter overrides the papermill way: ``-f FILE``, ``-y YAML``, ``-p NAME VALUE``, ``-r NAME VALUE``.

Merged in papermill's order whatever their place on the command line (files, then YAML
strings, then typed ``-p``, then raw ``-r``; later wins), typed as papermill types ``-p``
(``True``/``False``/``None``, int, float, else string), and checked against the notebook's
``parameters`` cell: an unknown name is an error with a did-you-mean, not a silent no-op.
"""

from __future__ import annotations

import difflib
import json
import keyword
import math
from dataclasses import dataclass, field

from .errors import ParameterError
from .yamlfile import load_mapping, no_dates_loader


@dataclass(frozen=True)
class ParameterArgs:
    """The raw parameter flags, as given."""

    files: tuple[str, ...] = ()
    yamls: tuple[str, ...] = ()
    typed: tuple[tuple[str, str], ...] = ()
    raw: tuple[tuple[str, str], ...] = ()
    extra: dict = field(default_factory=dict)  # from the Python API, applied last


def resolve_type(value: str):
    """papermill's ``-p`` typing: True/False/None, int, float, else the string."""
    if value == "True":
        return True
    if value == "False":
        return False
    if value == "None":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def yaml_text(values: dict) -> str:
    """Parameters as the text of one ``-y`` flag, typed exactly as given (YAML keeps a number as a mapping's key,
    which JSON cannot); sets and tuples become lists, as papermill's YAML has no others."""
    import yaml

    def plain(v):
        if isinstance(v, dict):
            return {k if isinstance(k, (str, int, float, bool, type(None))) else str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (set, frozenset)):
            return sorted((plain(x) for x in v), key=repr)
        return v

    return yaml.safe_dump(plain(values), default_flow_style=True, width=2**31, allow_unicode=True).strip()


def _yaml_load(text: str, origin: str) -> dict:
    return load_mapping(text, origin, ParameterError, what="parameters", loader=no_dates_loader())


def merge_parameters(args: ParameterArgs) -> dict:
    """All overrides, merged in papermill's order."""
    merged: dict = {}
    for path in args.files:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ParameterError(f"{path}: cannot read parameters file: {exc.strerror or exc}") from None
        merged.update(_yaml_load(text, path))
    for text in args.yamls:
        merged.update(_yaml_load(text, "-y"))
    for name, value in args.typed:
        merged[name] = resolve_type(value)
    for name, value in args.raw:
        merged[name] = value
    merged.update(args.extra)
    return merged


def check_parameters(values: dict, known: list[str], notebook: str, *, listing: str = "the parameters cell defines",
                     none: str = "the notebook has no cell tagged 'parameters'") -> dict:
    """Reject unknown names (with a did-you-mean) and values that cannot travel as JSON; ``listing`` and ``none``
    say where the known names come from (a notebook's parameters cell, a pipeline's jobs)."""
    for name in values:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ParameterError(f"parameter name {name!r} is not a Python identifier", path=notebook)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                hint = f"did you mean {close[0]}?"
            elif known:
                hint = f"{listing}: {', '.join(known)}"
            else:
                hint = none
            raise ParameterError(f"unknown parameter {name!r}", path=notebook, hint=hint)
        _check_json(values[name], name, notebook)
    return values


def _surrogate(value) -> str | None:
    """A string in ``value`` holding bytes that are not UTF-8 (Python keeps them as lone surrogates), if any."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value
        return None
    if isinstance(value, dict):
        return next((s for k, v in value.items() for s in (_surrogate(k), _surrogate(v)) if s), None)
    if isinstance(value, (list, tuple)):
        return next((s for v in value if (s := _surrogate(v))), None)
    return None


def _check_json(value, name: str, notebook: str) -> None:
    bad = _surrogate(value)
    if bad is not None:
        raw = bad.encode("utf-8", "surrogateescape")
        raise ParameterError(f"parameter {name!r}: {raw!r} is not UTF-8 text", path=notebook,
                             hint="pass text as UTF-8 (your terminal's encoding may be another)")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        raise ParameterError(
            f"parameter {name!r}: a {type(value).__name__} value cannot be passed (use strings, numbers, booleans, null, lists and mappings)",
            path=notebook,
        ) from None
