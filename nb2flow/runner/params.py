"""Parameters of a run: their one encoding per target, and their injection into a step as papermill does it.

A parameter's value is typed as papermill types it (YAML's types: strings, numbers, booleans, null, lists,
mappings — whose keys may be numbers too). Each place it goes has one encoder here:

* :func:`python_literal` — the ``injected-parameters`` cell (Python source, papermill's translator);
* :func:`to_wire` / :func:`from_wire` — JSON data between processes (``parameters.json``, ``--param NAME=JSON``,
  Argo's workflow parameters through :func:`nb2flow.argo.argo_json`, the run record, fingerprints). Plain JSON
  where JSON can say it; a mapping JSON cannot (a key that is not a string, as in ``{1: a}``) travels as
  ``{"__nb2flow__": "mapping", "items": [[key, value], ...]}``, so the step gets the value typed as given.
"""

from __future__ import annotations

import json
import math

from .auth import verified_json
from .protocol import Role


def python_literal(value) -> str:
    """Python source for a JSON value (papermill's translator, with repr for exact strings)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if isinstance(value, (int, str)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    raise TypeError(f"parameter value of type {type(value).__name__} is not JSON")


WIRE_TAG = "__nb2flow__"


def to_wire(value):
    """``value`` as JSON data that :func:`from_wire` turns back into it exactly (tuples become lists)."""
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and WIRE_TAG not in value:
            return {k: to_wire(v) for k, v in value.items()}
        return {WIRE_TAG: "mapping", "items": [[to_wire(k), to_wire(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return value


def from_wire(data):
    """The value :func:`to_wire` encoded."""
    if isinstance(data, dict):
        if data.get(WIRE_TAG) == "mapping" and isinstance(data.get("items"), list):
            return {_wire_key(from_wire(k)): from_wire(v) for k, v in data["items"]}
        return {k: from_wire(v) for k, v in data.items()}
    if isinstance(data, list):
        return [from_wire(v) for v in data]
    return data


def _wire_key(key):
    return tuple(key) if isinstance(key, list) else key  # a YAML sequence as a key is a tuple in Python


def parameters_source(params: dict) -> str:
    """The source of papermill's ``injected-parameters`` cell."""
    lines = ["# Parameters"]
    lines += [f"{name} = {python_literal(value)}" for name, value in params.items()]
    return "\n".join(lines) + "\n"


def read_params(params_file: str | None, items: list | None) -> dict:
    """The values of ``--params-file`` then each ``--param NAME=JSON`` (later wins)."""
    params: dict = {}
    if params_file:
        params.update(from_wire(verified_json(params_file)))
    for item in items or []:
        name, _, raw = item.partition("=")
        try:
            params[name] = from_wire(json.loads(raw))
        except ValueError:
            params[name] = raw  # typed by hand (e.g. in the Argo UI) without JSON quotes
    return params


def injection_index(roles: list) -> tuple[int, bool]:
    """Where the injected parameters go among cells of these roles: (index, replaces a cell there).

    Right after the notebook's parameters cell (whatever its tag's spelling: papermill's
    ``parameters`` or Kale's ``pipeline-parameters``), replacing an injected cell already
    there; at the top when the notebook has no parameters cell.
    """
    existing = next((i for i, r in enumerate(roles) if r == Role.INJECTED), None)
    if existing is not None:
        return existing, True
    after = next((i + 1 for i, r in enumerate(roles) if r == Role.PARAMETERS), 0)
    return after, False
