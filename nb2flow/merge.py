"""One notebook to read after a run: the original cells in order, each with its step's outputs."""

from __future__ import annotations

import copy
import json
import os

from .pipeline import Pipeline
from .runner.protocol import Role, RunLayout


def merged_notebook(pipeline: Pipeline, run_dir: str, parameters: dict) -> dict:
    """The original notebook's cells, with the outputs each cell got in its step.

    The run's ``injected-parameters`` cell is the one the steps executed (papermill's place:
    right after the parameters cell, replacing an injected cell the notebook already had).
    """
    layout = RunLayout(run_dir)
    outputs: dict[int, dict] = {}  # original cell number -> executed cell
    injected = None
    for step in pipeline.steps:  # notebook order: setup outputs come from the first step
        try:
            with open(layout.executed(step.task), encoding="utf-8") as fh:
                executed = json.load(fh)
        except (OSError, ValueError):
            continue
        for cell in executed.get("cells", []):
            meta = cell.get("metadata", {}).get("nb2flow", {})
            role, number = meta.get("role"), meta.get("cell")
            if role == Role.INJECTED and injected is None:
                injected = cell
            if number is None or role not in (Role.SETUP, Role.PARAMETERS, Role.CODE):
                continue
            if role == Role.CODE or number not in outputs:
                if cell.get("execution_count") is not None or cell.get("outputs"):
                    outputs[number] = cell
    if not parameters:
        injected = None  # nothing was injected: an injected cell of the notebook stays as it is
    cells = []
    for c in pipeline.notebook.cells:
        if "injected-parameters" in c.tags and injected is not None:
            continue  # replaced by the run's, below
        cell = {"cell_type": c.cell_type, "metadata": copy.deepcopy(c.metadata), "source": c.source}
        cell["metadata"].pop("id", None)
        if c.cell_type == "code":
            done = outputs.get(c.number)
            cell["execution_count"] = done.get("execution_count") if done else None
            cell["outputs"] = done.get("outputs", []) if done else []
            if done and "nb2flow" in done.get("metadata", {}):
                cell["metadata"]["nb2flow"] = {"step": pipeline.step_of_cell(c.index) or "setup"}
        cells.append(cell)
        if c.index == pipeline.parameter_cell and injected is not None:
            cells.append({
                "cell_type": "code", "execution_count": injected.get("execution_count"),
                "metadata": {"tags": ["injected-parameters"]}, "outputs": injected.get("outputs", []),
                "source": "".join(injected.get("source", "")),  # nbformat may store it as lines
            })
    count = 0
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:04d}"
        if cell["cell_type"] == "code" and (cell["execution_count"] is not None or "injected-parameters" in cell["metadata"].get("tags", [])):
            count += 1  # one sequence, as if run top to bottom
            cell["execution_count"] = count
    meta = {k: v for k, v in pipeline.notebook.metadata.items() if k != "widgets"}
    meta["nb2flow"] = {"parameters": parameters, "run_dir": os.path.basename(run_dir)}
    return {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}
