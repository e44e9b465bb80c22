"""One notebook to read after a run: the original cells in order, each with its step's outputs."""

from __future__ import annotations

import copy
import json
import os

from .pipeline import Pipeline


def merged_notebook(pipeline: Pipeline, run_dir: str, parameters: dict) -> dict:
    """The original notebook's cells, with the outputs each cell got in its step."""
    outputs: dict[int, dict] = {}  # original cell number -> executed cell
    for step in pipeline.steps:  # notebook order: setup outputs come from the first step
        path = os.path.join(run_dir, "steps", step.task, f"{step.task}.ipynb")
        try:
            with open(path, encoding="utf-8") as fh:
                executed = json.load(fh)
        except (OSError, ValueError):
            continue
        for cell in executed.get("cells", []):
            meta = cell.get("metadata", {}).get("nb2flow", {})
            number = meta.get("cell")
            if number is None or meta.get("role") == "define":
                continue
            if meta.get("role") == "code" or number not in outputs:
                if cell.get("execution_count") is not None or cell.get("outputs"):
                    outputs[number] = cell
    cells = []
    for c in pipeline.notebook.cells:
        cell = {"cell_type": c.cell_type, "metadata": copy.deepcopy(c.metadata), "source": c.source}
        if "id" in c.metadata:
            cell["metadata"].pop("id", None)
        if c.cell_type == "code":
            done = outputs.get(c.number)
            cell["execution_count"] = done.get("execution_count") if done else None
            cell["outputs"] = done.get("outputs", []) if done else []
            if done and "nb2flow" in done.get("metadata", {}):
                cell["metadata"]["nb2flow"] = {"step": pipeline.step_of_cell(c.index) or "setup"}
        if "injected-parameters" in c.tags and parameters:
            continue  # replaced below, as papermill does
        cells.append(cell)
        if c.index == pipeline.parameter_cell and parameters:
            from .runtime import parameters_source

            cells.append({
                "cell_type": "code", "execution_count": None, "metadata": {"tags": ["injected-parameters"]},
                "outputs": [], "source": parameters_source(parameters),
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
