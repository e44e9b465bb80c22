"""Reading a notebook file into plain, immutable cells.

This reads the JSON itself (no nbformat import) so that ``check`` and ``graph`` start
instantly, and turns every way a file can fail to be a notebook into one
:class:`NotebookReadError` line that names the file and the cause. The file is only read.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .errors import NotebookReadError

CELL_TYPES = ("code", "markdown", "raw")


@dataclass(frozen=True)
class Cell:
    """One notebook cell as JupyterLab shows it: ``number`` is 1-based over all cells."""

    index: int
    cell_type: str
    source: str
    tags: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def number(self) -> int:
        return self.index + 1

    @cached_property
    def first_line(self) -> str:
        """The first non-blank line, shortened for messages (computed once: cells can be huge)."""
        start = 0
        source = self.source
        while start < len(source):
            end = source.find("\n", start)
            end = len(source) if end < 0 else end
            line = source[start:end].strip()
            if line:
                return line if len(line) <= 60 else line[:57] + "..."
            start = end + 1
        return "(empty cell)"


@dataclass(frozen=True)
class Notebook:
    """A notebook's cells and the few metadata fields nb2flow uses."""

    path: str
    cells: tuple[Cell, ...]
    kernel_name: str
    language: str
    nbformat: tuple[int, int]
    sha256: str
    raw: dict = field(compare=False, hash=False, repr=False)

    @property
    def metadata(self) -> dict:
        """The notebook-level metadata, ``{}`` when absent or not an object."""
        meta = self.raw.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def stem(self) -> str:
        name = os.path.basename(self.path)
        return name[: -len(".ipynb")] if name.endswith(".ipynb") else os.path.splitext(name)[0]


def _fail(path: str, message: str, cell: int | None = None) -> NotebookReadError:
    return NotebookReadError(message, path=path, cell=cell)


MAX_NOTEBOOK_BYTES = 1 << 30


def read_notebook(path: str | os.PathLike) -> Notebook:
    """Read and check a notebook file; raise :class:`NotebookReadError` with one line if unusable."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise _fail(path, "not a regular file (a device, pipe or socket), not a notebook")
            data = fh.read(MAX_NOTEBOOK_BYTES + 1)
        if len(data) > MAX_NOTEBOOK_BYTES:
            raise _fail(path, f"larger than {MAX_NOTEBOOK_BYTES >> 30} GiB: not a notebook nb2flow can split")
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not a notebook file") from None
    except PermissionError:
        raise _fail(path, "permission denied") from None
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror or exc}") from None
    return parse_notebook(data, path)


def parse_notebook(data: bytes, path: str) -> Notebook:
    """Parse notebook bytes; ``path`` is used in messages only."""
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not text.strip():
        raise _fail(path, "empty file, not a notebook")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _fail(path, "not a notebook: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise _fail(path, f"not a notebook: the JSON top level is {_json_type(doc)}, not an object")
    major = doc.get("nbformat")
    minor = doc.get("nbformat_minor", 0)
    if major is None and "cells" not in doc and "worksheets" not in doc:
        raise _fail(path, "not a notebook: no 'nbformat' or 'cells' field")
    if major is None:
        major = 4
    if not isinstance(major, int) or isinstance(major, bool) or not isinstance(minor, int):
        raise _fail(path, f"not a notebook: 'nbformat' is {major!r}, expected a whole number")
    if major == 3:
        raw_cells = _cells_from_v3(doc, path)
    elif major == 4:
        raw_cells = doc.get("cells")
        if raw_cells is None:
            raise _fail(path, "not a notebook: no 'cells' list")
    else:
        raise _fail(path, f"unsupported nbformat {major}.{minor} (nb2flow reads nbformat 3 and 4)")
    if not isinstance(raw_cells, list):
        raise _fail(path, f"not a notebook: 'cells' is {_json_type(raw_cells)}, expected a list")
    cells = tuple(_parse_cell(raw, i, path) for i, raw in enumerate(raw_cells))
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    kernelspec = meta.get("kernelspec") if isinstance(meta.get("kernelspec"), dict) else {}
    lang_info = meta.get("language_info") if isinstance(meta.get("language_info"), dict) else {}
    kernel_name = kernelspec.get("name") if isinstance(kernelspec.get("name"), str) else "python3"
    language = kernelspec.get("language") or lang_info.get("name") or "python"
    if not isinstance(language, str):
        language = "python"
    return Notebook(
        path=path,
        cells=cells,
        kernel_name=kernel_name or "python3",
        language=language.lower(),
        nbformat=(major, minor),
        sha256=digest,
        raw=doc,
    )


def _cells_from_v3(doc: dict, path: str) -> list:
    worksheets = doc.get("worksheets")
    if not isinstance(worksheets, list):
        raise _fail(path, "not a notebook: nbformat 3 without a 'worksheets' list")
    cells: list = []
    for ws in worksheets:
        if not isinstance(ws, dict) or not isinstance(ws.get("cells", []), list):
            raise _fail(path, "not a notebook: a worksheet is not an object with a 'cells' list")
        for raw in ws.get("cells", []):
            if isinstance(raw, dict) and raw.get("cell_type") == "code":
                raw = dict(raw, source=raw.get("input", ""))
            elif isinstance(raw, dict) and raw.get("cell_type") == "heading":
                raw = dict(raw, cell_type="markdown")
            cells.append(raw)
    return cells


def _parse_cell(raw: Any, index: int, path: str) -> Cell:
    number = index + 1
    if not isinstance(raw, dict):
        raise _fail(path, f"cell is {_json_type(raw)}, expected an object", cell=number)
    cell_type = raw.get("cell_type")
    if cell_type not in CELL_TYPES:
        raise _fail(path, f"unknown cell_type {cell_type!r} (expected code, markdown or raw)", cell=number)
    source = raw.get("source", "")
    if isinstance(source, list):
        if not all(isinstance(part, str) for part in source):
            raise _fail(path, "'source' list holds something other than strings", cell=number)
        source = "".join(source)
    elif not isinstance(source, str):
        raise _fail(path, f"'source' is {_json_type(source)}, expected a string or a list of strings", cell=number)
    if "\x00" in source:
        raise _fail(path, "source contains a NUL character", cell=number)
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _fail(path, f"'metadata' is {_json_type(metadata)}, expected an object", cell=number)
    tags = metadata.get("tags", [])
    if tags is None:
        tags = []
    if isinstance(tags, str):
        raise _fail(path, f"'metadata.tags' is a string ({tags!r}), expected a list of strings", cell=number)
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _fail(path, "'metadata.tags' must be a list of strings", cell=number)
    return Cell(
        index=index,
        cell_type=cell_type,
        source=source.replace("\r\n", "\n"),
        tags=tuple(t.strip() for t in tags if t.strip()),
        metadata=metadata,
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
