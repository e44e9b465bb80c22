"""One notebook to read after a run: the original cells in order, each with its step's outputs.

It reads the bundle's ``notebook.json`` (the notebook's cells when the bundle was written, each
with the step it belongs to) and the run folder's executed step notebooks, so a local run and an
Argo run's final task build it the same way, the latter with no nb2flow installed.
"""

from __future__ import annotations

import copy
import json
import os

from .files import write_atomic, write_new
from .protocol import Role, RunLayout, StepState, visible_notebook


def merged_notebook(source: dict, steps: list, run_dir: str, parameters: dict) -> dict:
    """The original notebook's cells (``source``: the bundle's ``notebook.json``), with the outputs each
    cell got in its step (``steps``: task names in notebook order).

    The run's ``injected-parameters`` cell is the one the steps executed (papermill's place:
    right after the parameters cell, replacing an injected cell the notebook already had).
    """
    layout = RunLayout(run_dir)
    outputs: dict[int, dict] = {}  # original cell number -> executed cell
    injected = None
    for task in steps:  # notebook order: setup outputs come from the first step
        try:
            with open(layout.executed(task), encoding="utf-8") as fh:
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
    installed: dict = {}  # cell number -> what its install lines printed when the run made them, once
    try:
        with open(layout.installs, encoding="utf-8") as fh:
            for entry in json.load(fh):
                installed.setdefault(entry["cell"], []).append(entry.get("output") or "")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cells = []
    for c in source["cells"]:
        tags = c["metadata"].get("tags") or []
        if "injected-parameters" in tags and injected is not None:
            continue  # replaced by the run's, below
        cell = {"cell_type": c["cell_type"], "metadata": copy.deepcopy(c["metadata"]), "source": c["source"]}
        cell["metadata"].pop("id", None)
        if c["cell_type"] == "code":
            done = outputs.get(c["number"])
            cell["execution_count"] = done.get("execution_count") if done else None
            cell["outputs"] = done.get("outputs", []) if done else []
            if installed.get(c["number"]):
                cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "".join(installed[c["number"]])}] + cell["outputs"]
            if done and "nb2flow" in done.get("metadata", {}):
                cell["metadata"]["nb2flow"] = {"step": c.get("step") or "setup"}
        cells.append(cell)
        if c["index"] == source.get("parameter_cell") and injected is not None:
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
            cell["outputs"] = [dict(o, execution_count=count) if o.get("output_type") == "execute_result" else o
                               for o in cell.get("outputs", [])]  # In [n] and Out[n] agree
    meta = copy.deepcopy(source.get("metadata") or {})
    meta["nb2flow"] = {"parameters": parameters, "run_dir": os.path.basename(run_dir)}
    return {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}


def write_merged(source: dict, steps: list, run_dir: str, parameters: dict, *, notebook_folder: str, run_id: str) -> dict:
    """Write the merged notebook into the run folder and, never overwriting, into ``nb2flow-runs/`` beside
    the notebook, where JupyterLab's file browser shows it. Returns the paths written (and what failed)."""
    layout = RunLayout(run_dir)
    stem = source["stem"]
    out: dict = {"output_notebook": None, "visible_notebook": None}
    try:
        text = json.dumps(merged_notebook(source, steps, run_dir, parameters), indent=1, ensure_ascii=False)
        write_atomic(layout.out_notebook(stem), text)
        out["output_notebook"] = layout.out_notebook(stem)
    except OSError as exc:
        out["problem"] = f"cannot write {layout.out_notebook(stem)}: {exc}"
        return out
    try:
        out["visible_notebook"] = write_new(visible_notebook(notebook_folder, run_id), text)
    except OSError as exc:
        out["problem"] = f"cannot write the run's notebook beside yours: {exc}"
    return out


def _ran(run_dir: str, task: str) -> bool:
    """Whether a step ran its cells (not only warmed up and was cancelled)."""
    try:
        with open(RunLayout(run_dir).status(task), encoding="utf-8") as fh:
            state = json.load(fh).get("state")
    except (OSError, ValueError, AttributeError):
        return False
    return StepState.parse(state or "") not in (StepState.PENDING, StepState.CANCELLED, StepState.SKIPPED)


def write_merged_jobs(bundle, manifest: dict, run_dir: str, parameters: dict, *, folder: str, run_id: str) -> dict:
    """A pipeline of several notebooks and scripts (``manifest``: the bundle's ``pipeline.json``): each notebook job's
    merged notebook (with the job's parameters), in the run folder as ``JOB.out.ipynb`` and beside that notebook as
    ``nb2flow-runs/RUN_ID-JOB.ipynb``. Returns the run record's fields — ``pipeline``, ``outputs`` (job -> paths),
    ``output_notebook`` and ``visible_notebook`` (the last notebook that ran) — and ``problems`` (for the caller to say)."""
    from .auth import verified_json
    from .params import from_wire
    from .record import pipeline_entry

    outputs: dict = {}
    problems: list = []
    for job in manifest.get("jobs") or []:
        if job.get("kind") != "notebook" or not any(_ran(run_dir, t) for t in job["steps"]):
            continue  # a command, or a notebook none of whose steps ran (a job before it failed)
        try:
            source = dict(verified_json(bundle.job_source(job["name"])), stem=job["name"])
        except (OSError, ValueError) as exc:
            problems.append(f"{job['name']}: {exc}")
            continue
        accepts = job.get("accepts")
        params = {k: v for k, v in parameters.items() if accepts is None or k in accepts}
        params.update({k: from_wire(v) for k, v in (job.get("fixed") or {}).items()})  # the job's own values win
        written = write_merged(source, job["steps"], run_dir, params, notebook_folder=os.path.join(folder, job.get("subdir") or ""),
                               run_id=f"{run_id}-{job['name']}")
        if written.get("problem"):
            problems.append(written.pop("problem"))
        outputs[job["name"]] = written
    last = list(outputs.values())[-1] if outputs else {}
    return {"pipeline": pipeline_entry(manifest), "outputs": outputs, "output_notebook": last.get("output_notebook"),
            "visible_notebook": last.get("visible_notebook"), "problems": problems}


def write_html(output_notebook: str, visible_notebook: str | None) -> dict:
    """An HTML rendering of the merged notebook beside it (and beside its visible copy), read without a
    kernel. nbconvert is optional in an image: without it, the record says so."""
    try:
        import nbconvert
        import nbformat
    except ImportError:
        return {"html": None, "html_skipped": "nbconvert is not installed where the run ended"}
    try:
        with open(output_notebook, encoding="utf-8") as fh:
            nb = nbformat.read(fh, as_version=4)
        body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    except Exception as exc:  # a template or a renderer missing in the image: the notebook is still there
        return {"html": None, "html_skipped": f"nbconvert could not render it: {type(exc).__name__}: {exc}"}
    path = os.path.splitext(output_notebook)[0] + ".html"
    write_atomic(path, body)
    out = {"html": path}
    if visible_notebook:
        try:
            out["visible_html"] = write_new(os.path.splitext(visible_notebook)[0] + ".html", body)
        except OSError:
            pass
    return out
