"""Build small notebooks for tests without nbformat."""

from __future__ import annotations

import itertools
import json
import os

_ids = itertools.count()


def cell(source: str, *tags: str, cell_type: str = "code") -> dict:
    c = {"cell_type": cell_type, "id": f"c{next(_ids)}", "metadata": {"tags": list(tags)} if tags else {}, "source": source}
    if cell_type == "code":
        c.update(execution_count=None, outputs=[])
    return c


def md(source: str, *tags: str) -> dict:
    return cell(source, *tags, cell_type="markdown")


def notebook(*cells: dict) -> dict:
    return {
        "cells": list(cells),
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write(path, *cells: dict) -> str:
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(notebook(*cells), fh, indent=1)
    return path


def load_cells(*cells: dict, path: str = "nb.ipynb"):
    """The pipeline of a notebook made of these cells (nothing written to disk)."""
    from nb2flow.api import load_notebook
    from nb2flow.notebook import parse_notebook

    return load_notebook(parse_notebook(json.dumps(notebook(*cells)).encode(), path))


def rendered(pipeline) -> list[str]:
    return [f.render(pipeline.path) for f in pipeline.findings]
