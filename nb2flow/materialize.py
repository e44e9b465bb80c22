"""Writing a pipeline's step files: a bundle any backend runs with one command per step.

A bundle folder (:class:`~nb2flow.runner.protocol.BundleLayout`) holds ``nb2flow_step.py`` (the
step runner, :mod:`nb2flow.runner`), and for each step ``steps/TASK.ipynb`` (or ``TASK.py`` in
script mode) plus ``steps/TASK.json``,
its spec: inputs with their providers, outputs with their readers, the kernel. The same
bundle serves a local run and an Argo Workflow; scheduled workflows keep a snapshot of it.

A step notebook holds, in order: the setup and parameters cells, the statements that
re-create the modules, functions and classes it reads, a cell that loads the values it
reads, the step's own cells, and a cell that saves the values later steps read. Every cell
carries ``metadata.nb2flow`` = ``{"role": ..., "cell": N}`` (a :class:`~nb2flow.runner.protocol.Role`;
N: the original cell number).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace

from . import __version__
from .errors import PipelineError
from .pipeline import Pipeline, Step
from .runner.protocol import BundleLayout, Role, StepSpec, notebook_folder
from .runner.script_mode import script_mark

MODES = ("notebook", "script")
# line magics that only matter inside a kernel; a plain-python step drops them
KERNEL_ONLY_MAGICS = ("matplotlib", "config", "load_ext", "autoreload", "reload_ext")
KERNEL_ONLY_MAGIC = re.compile(rf"^\s*%({'|'.join(KERNEL_ONLY_MAGICS)})\b.*$", re.M)


@dataclass(frozen=True)
class Bundle:
    """Where a pipeline's step files are, and each step's fingerprint (for --resume)."""

    path: str
    mode: str
    fingerprints: dict  # step name -> sha256 of its code and its providers' fingerprints
    installs: tuple = ()  # install lines of set-up cells taken out of the steps, to run once (installs_once)
    manifest: dict = field(default_factory=dict, compare=False)  # what pipeline.json says (jobs of several notebooks and scripts)


def _cell_json(source: str, role: Role, cell: int | None, tags=(), index: int = 0) -> dict:
    meta = {"nb2flow": {"role": role.value, **({"cell": cell} if cell is not None else {})}}
    if tags:
        meta["tags"] = list(tags)
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": f"nb2flow-{index:04d}",
        "metadata": meta,
        "outputs": [],
        "source": source,
    }


def setup_installs(pipeline: Pipeline) -> list:
    """The install lines of the set-up cells (see :mod:`nb2flow.installs`), in notebook order."""
    from .installs import split_installs

    found = []
    for i in pipeline.setup_cells:
        found += split_installs(pipeline.notebook.cells[i].source, pipeline.notebook.cells[i].number)[0]
    return found


#: Libraries whose import starts threads or state a fork must not copy (CUDA, OpenMP pools, gRPC): never
#: imported ahead in the fork server; every step imports them itself, as a fresh process would.
FORK_UNSAFE = frozenset({"torch", "torchvision", "torchaudio", "tensorflow", "keras", "jax", "jaxlib", "flax", "cupy",
                         "ray", "pyspark", "grpc", "tensorboard", "paddle", "mxnet", "dask.distributed", "distributed"})


def setup_imports(pipeline: Pipeline) -> list:
    """Modules the set-up cells import at their top level (``import x.y``, ``from x.y import z``), in order,
    for the fork server to import once for every step. Only installed libraries: the notebook's own modules
    (beside it, maybe edited between runs) and fork-unsafe frameworks are left to each step."""
    import ast

    found: list = []
    for i in pipeline.setup_cells:
        code = pipeline.code.get(i)
        try:
            tree = ast.parse(code.python if code else pipeline.notebook.cells[i].source)
        except SyntaxError:
            continue
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
            for name in names:
                top = name.split(".")[0]
                if top in FORK_UNSAFE or name in FORK_UNSAFE or name in found:
                    continue
                found.append(name)
    return found


def step_cells(pipeline: Pipeline, step: Step, *, installs_once: bool = False) -> list[tuple[Role, int | None, str, tuple]]:
    """(role, original cell number, source, tags) in the order the step runs them (``installs_once``: the set-up
    cells' install lines left out, as comments: the run makes them once before the steps)."""
    from .installs import split_installs

    nb = pipeline.notebook
    out: list[tuple[Role, int | None, str, tuple]] = []
    for i in pipeline.setup_cells:
        cell = nb.cells[i]
        role = Role.PARAMETERS if i == pipeline.parameter_cell else (Role.INJECTED if "injected-parameters" in cell.tags else Role.SETUP)
        source = split_installs(cell.source, cell.number)[1] if installs_once and role is Role.SETUP else cell.source
        out.append((role, cell.number, source, cell.tags))
    ahead = preimports(pipeline, step)
    if ahead:
        out.append((Role.PREIMPORT, None, preimport_source(ahead), ()))
    early = [d for d in step.definitions if not d.needs_values]
    late = [d for d in step.definitions if d.needs_values]
    for d in early:
        out.append((Role.DEFINE, d.cell + 1, d.source, ()))
    data = step.data_inputs
    if data or step.rng_from or step.unchanged:
        listing = [f"{i.name} (from step {i.provider})" for i in data]
        listing += [f"the random generators' state (from step {step.rng_from})"] if step.rng_from else []
        listing += [f"notes {', '.join(n for n, _, _ in step.unchanged)} as they are"] if step.unchanged else []
        out.append((Role.LOAD, None, f"# nb2flow loads: {', '.join(listing)}\n", ()))
    for d in late:
        out.append((Role.DEFINE, d.cell + 1, d.source, ()))
    for i in step.cells:
        cell = nb.cells[i]
        out.append((Role.CODE, cell.number, cell.source, cell.tags))
    if step.outputs or step.saves_rng or step.unchanged:
        listing = list(step.outputs) + (["the random generators' state"] if step.saves_rng else [])
        listing += [f"checks that {', '.join(n for n, _, _ in step.unchanged)} did not change"] if step.unchanged else []
        out.append((Role.SAVE, None, f"# nb2flow saves: {', '.join(listing)}\n", ()))
    return out


def preimports(pipeline: Pipeline, step: Step) -> list:
    """Installed libraries the step's own cells import (``from sklearn.ensemble import X``), in order, for the step to
    import while it waits for its parents: a kernel that would otherwise sit idle. Only imports that come before any
    statement configuring the process or a library (which an import may read), in a step that re-runs no
    configuring statement of another step, and never the notebook's own modules (they may read a parent's files)."""
    import ast

    code = pipeline.code
    if not step.parents:
        return []  # nothing to wait for
    for d in step.definitions:
        st = code[d.cell].statements[d.stmt] if d.cell in code and d.stmt < len(code[d.cell].statements) else None
        if st is None or st.config or st.imports:
            return []  # it re-runs another step's configuration (or an import of it) first: keep the notebook's order
    local = pipeline.local_modules
    found: list = []
    for i in step.cells:
        cell = code.get(i)
        if cell is None:
            return found
        for st in cell.statements:
            if st.config:
                return found
            if not st.imports or set(st.imports) & local:
                continue
            try:
                node = ast.parse(st.source).body[0]
            except (SyntaxError, IndexError):
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] + [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
                     if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            found += [n for n in names if n not in found]
    return found


def preimport_source(modules: list) -> str:
    """The cell that imports ``modules`` ahead (a name that is not a module, or fails to import, is passed over: the
    step's own cell then imports it, or raises, as it would)."""
    return ("# nb2flow: libraries this step's cells import, imported while it waits for its parents\n"
            "import importlib as _nb2flow_importlib\n"
            f"for _nb2flow_module in {modules!r}:\n"
            "    try:\n"
            "        _nb2flow_importlib.import_module(_nb2flow_module)\n"
            "    except Exception:\n"
            "        pass\n"
            "del _nb2flow_importlib, _nb2flow_module\n")


def consumers_of(pipeline: Pipeline) -> dict[str, dict[str, list[str]]]:
    """step -> value name -> the steps that load it from that step."""
    out: dict[str, dict[str, list[str]]] = {s.name: {} for s in pipeline.steps}
    for s in pipeline.steps:
        for i in s.data_inputs:
            out[i.provider].setdefault(i.name, []).append(s.name)
    return out


def optional_outputs_of(pipeline: Pipeline) -> dict[str, set]:
    """step -> the values it saves only for steps that read names at run time: a value that cannot travel is left out."""
    required: dict[str, set] = {s.name: set() for s in pipeline.steps}
    optional: dict[str, set] = {s.name: set() for s in pipeline.steps}
    for s in pipeline.steps:
        for i in s.data_inputs:
            (optional if i.optional else required)[i.provider].add(i.name)
    return {name: optional[name] - required[name] for name in optional}


def fingerprints(pipeline: Pipeline, mode: str) -> dict[str, str]:
    """A hash per step of everything that decides its result, chained through its providers."""
    if pipeline.is_workflow:
        return workflow_fingerprints(pipeline, mode)
    result: dict[str, str] = {}
    for step in pipeline.steps:
        h = hashlib.sha256()
        h.update(mode.encode())
        for role, number, source, _ in step_cells(pipeline, step):
            if role is Role.PREIMPORT:
                continue  # importing ahead changes no result
            h.update(f"\x00{role.value}\x00{number}\x00{source}".encode())
        for i in sorted(step.data_inputs, key=lambda i: i.name):
            h.update(f"\x00in\x00{i.name}\x00{result[i.provider]}".encode())
        for p in step.parents:
            h.update(f"\x00after\x00{result[p]}".encode())
        if step.rng_from:
            h.update(f"\x00random\x00{result[step.rng_from]}".encode())
        h.update(json.dumps(step.outputs).encode())
        result[step.name] = h.hexdigest()
    return result


def script_source(pipeline: Pipeline, step: Step, *, installs_once: bool = False) -> str:
    """The step as a plain Python script in percent format (one ``# %%`` chunk per cell)."""
    lines = [
        f"# nb2flow step script: step {step.name} of {os.path.basename(pipeline.path)}",
        "# Generated by nb2flow; edit the notebook, not this file. Run it with nb2flow_step.py.",
    ]
    for role, number, source, _ in step_cells(pipeline, step, installs_once=installs_once):
        python = source
        if number is not None and role is not Role.DEFINE:
            code = pipeline.code.get(number - 1)
            if installs_once and role is Role.SETUP and source != pipeline.notebook.cells[number - 1].source:
                from .cellcode import to_python  # install lines are comments now; the rest as usual

                python, _, transformed = to_python(KERNEL_ONLY_MAGIC.sub("", source))
            elif code is not None and code.automagic:  # `pip install x` without the %
                python, transformed = ("", False) if code.automagic in KERNEL_ONLY_MAGICS else (code.python, True)
            elif code is not None and code.transformed:
                from .cellcode import to_python

                python, _, transformed = to_python(KERNEL_ONLY_MAGIC.sub("", source))
            else:
                transformed = False
            if transformed and "get_ipython()" in python:
                setup = role in (Role.SETUP, Role.PARAMETERS, Role.INJECTED)
                raise PipelineError(
                    "uses IPython syntax (a %magic, !shell command or magic without %) that plain python cannot run"
                    + (" (a setup cell: every step runs it)" if setup else ""),
                    path=pipeline.path, cell=number, step=None if setup else step.name, hint="run with --mode notebook",
                )
        lines.append(script_mark(role, number))
        lines.append(python.rstrip("\n"))
    return "\n".join(lines) + "\n"


def source_snapshot(pipeline: Pipeline) -> dict:
    """The notebook's cells as the bundle keeps them for the merged notebook (each with its step)."""
    nb = pipeline.notebook
    return {
        "stem": nb.stem,
        "metadata": {k: v for k, v in nb.metadata.items() if k != "widgets"},
        "parameter_cell": pipeline.parameter_cell,
        "cells": [{"cell_type": c.cell_type, "metadata": c.metadata, "source": c.source, "number": c.number,
                   "index": c.index, "step": pipeline.step_of_cell(c.index)} for c in nb.cells],
    }


def write_steps(pipeline: Pipeline, layout: BundleLayout, *, mode: str, cwd: str, installs_once: bool, prints: dict,
                more: dict | None = None) -> None:
    """Each step's spec and notebook (or script) into the bundle; ``more``: spec fields every step gets (a
    pipeline of several notebooks: the job, the parameters it takes, its folder)."""
    from .runner.files import write_atomic, write_json

    consumers = consumers_of(pipeline)
    optional_outputs = optional_outputs_of(pipeline)
    tasks = {s.name: s.task for s in pipeline.steps}
    for step in pipeline.steps:
        spec = StepSpec(
            name=step.name, task=step.task, notebook=os.path.basename(pipeline.path), kernel_name=pipeline.notebook.kernel_name,
            mode=mode, cwd=cwd, parents=list(step.parents),
            inputs=[{"name": i.name, "from": i.provider, "from_task": tasks[i.provider], "kind": i.kind,
                     **({"optional": True} if i.optional else {})} for i in step.inputs if i.provider],
            outputs=list(step.outputs), consumers=consumers[step.name], optional_outputs=sorted(optional_outputs[step.name]),
            random_state_from=tasks[step.rng_from] if step.rng_from else None, saves_random_state=step.saves_rng,
            options=step.options.to_json(), fingerprint=prints[step.name],
            unchanged={n: {"cell": cell + 1, "readers": list(readers), "tag": pipeline.after_tag} for n, cell, readers in step.unchanged},
            **(more or {}),
        )
        write_json(layout.spec(step.task), spec.to_json(), signed=True, compact=True)
        if mode == "script":
            write_atomic(layout.script(step.task), script_source(pipeline, step, installs_once=installs_once), signed=True)
        else:
            cells = [
                _cell_json(source, role, number, tags, index)
                for index, (role, number, source, tags) in enumerate(step_cells(pipeline, step, installs_once=installs_once))
            ]
            doc = {
                "cells": cells,
                "metadata": {
                    **{k: v for k, v in pipeline.notebook.metadata.items() if k in ("kernelspec", "language_info")},
                    "nb2flow": {"step": step.name, "notebook": os.path.basename(pipeline.path), "version": __version__},
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            }
            write_atomic(layout.notebook(step.task), json.dumps(doc), signed=True)  # C encoder: 100 steps, 100 notebooks


def materialize(pipeline: Pipeline, bundle_dir: str, *, mode: str = "notebook", cwd: str | None = None,
                installs_once: bool = False, prints: dict | None = None) -> Bundle:
    """Write the bundle for ``pipeline`` into ``bundle_dir`` (created; files replaced atomically).

    ``installs_once``: the set-up cells' install lines are left out of the steps and listed in
    ``pipeline.json`` for the run to make once (a local run); fingerprints do not depend on it."""
    from .keys import user_key
    from .runner import write_runner
    from .runner.files import make_private_dirs, write_json

    user_key()  # every file a step loads is signed with it
    if mode not in MODES:
        raise PipelineError(f"unknown mode {mode!r} (notebook or script)")
    if not pipeline.ok:
        first = pipeline.errors[0]
        raise PipelineError(
            f"{len(pipeline.errors)} problem(s) stop the run; first: {first.message}",
            path=pipeline.path, cell=first.cell, step=first.step,
            hint=f"see `nb2flow check {pipeline.path}`",
        )
    if not pipeline.steps:
        raise PipelineError("nothing to run: the notebook has no steps", path=pipeline.path, hint="tag the cells to run step:NAME")
    layout = BundleLayout(bundle_dir)
    make_private_dirs(layout.steps)
    write_runner(bundle_dir)
    if pipeline.is_workflow:
        return _materialize_workflow(pipeline, layout, mode=mode, cwd=cwd)
    prints = prints or fingerprints(pipeline, mode)  # ``prints``: the caller's, of this pipeline and mode
    cwd = cwd or notebook_folder(pipeline.path)
    write_steps(pipeline, layout, mode=mode, cwd=cwd, installs_once=installs_once, prints=prints)
    installs = tuple(setup_installs(pipeline)) if installs_once else ()
    write_json(layout.source, source_snapshot(pipeline), signed=True)
    write_json(
        layout.pipeline,
        {
            "notebook": os.path.abspath(pipeline.path),
            "sha256": pipeline.notebook.sha256,
            "mode": mode,
            "nb2flow_version": __version__,
            "parameters": [{"name": p.name, "default": p.source} for p in pipeline.parameters],
            "installs": [{"cell": i.cell, "line": i.line} for i in installs],
            "steps": [
                {"name": s.name, "task": s.task, "parents": list(s.parents), "options": s.options.to_json(), "fingerprint": prints[s.name]}
                for s in pipeline.steps
            ],
        },
        signed=True,
    )
    return Bundle(path=os.path.abspath(bundle_dir), mode=mode, fingerprints=prints, installs=installs)



# ---------------------------------------------------------------------------------------------- several notebooks and scripts
def _file_digest(path: str) -> str:
    """A file's SHA-256; a file over 64 MiB by its size and modification time (a data file a command names)."""
    st = os.stat(path)
    if st.st_size > 64 * 1024 * 1024:
        return f"size={st.st_size},mtime={st.st_mtime_ns}"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def workflow_fingerprints(workflow, mode: str) -> dict:
    """A notebook job's steps: their notebook's fingerprints; a command: its command line and the files it names
    (script, interpreter, data). Each chained through the step's parents, across jobs."""
    from .runner.params import to_wire
    from .workflow import files_named

    result: dict = {}
    for job in workflow.jobs:
        own = json.dumps(to_wire(job.parameters), sort_keys=True)  # the job's own parameter values decide its result too
        if job.notebook:
            sub = workflow.pipelines[job.name]
            inner = {name: hashlib.sha256(f"{print_}\x00{own}".encode()).hexdigest() for name, print_ in fingerprints(sub, mode).items()}
            names = [s.name for s in sub.steps]
        else:
            step = workflow.step(job.name)
            h = hashlib.sha256(f"command\x00{json.dumps(step.command, sort_keys=True)}\x00{own}".encode())
            for path in files_named(step.command, workflow.folder):
                try:
                    h.update(f"\x00file\x00{os.path.relpath(path, workflow.folder)}\x00{_file_digest(path)}".encode())
                except OSError:
                    pass
            inner, names = {job.name: h.hexdigest()}, [job.name]
        for name in names:
            h = hashlib.sha256(inner[name].encode())
            for p in workflow.step(name).parents:
                h.update(f"\x00after\x00{result[p]}".encode())
            result[name] = h.hexdigest()
    return result


def _materialize_workflow(workflow, layout: BundleLayout, *, mode: str, cwd: str | None) -> Bundle:
    """A pipeline of several notebooks and scripts: every job's steps in one bundle (a notebook job's cells as one
    notebook's are, a command's spec saying what it runs), each notebook job's cells for its merged notebook."""
    from .runner.files import make_private_dirs, write_json
    from .runner.params import to_wire

    prints = workflow_fingerprints(workflow, mode)
    base = cwd or workflow.folder
    jobs = []
    for job in workflow.jobs:
        entry = {"name": job.name, "kind": job.kind, "text": job.text, "steps": [workflow.step(n).task for n in workflow.job_steps[job.name]]}
        if job.notebook:
            sub = workflow.pipelines[job.name]
            flat = replace(sub, steps=tuple(workflow.step(s.name) for s in sub.steps))
            subdir = os.path.relpath(os.path.dirname(job.notebook), workflow.folder)
            subdir = "" if subdir == "." else subdir
            accepts = workflow.accepts(job)
            write_steps(flat, layout, mode=mode, cwd=os.path.join(base, subdir) if subdir else base, installs_once=False,
                        prints=prints, more={"job": job.name, "accepts": accepts, "subdir": subdir, "fixed": to_wire(job.parameters)})
            make_private_dirs(os.path.dirname(layout.job_source(job.name)))
            write_json(layout.job_source(job.name), source_snapshot(flat), signed=True)
            entry.update(notebook=os.path.relpath(job.notebook, workflow.folder), subdir=subdir, accepts=accepts,
                         fixed=to_wire(job.parameters))
        else:
            step = workflow.step(job.name)
            accepts = workflow.accepts(job)
            defaults = {ph: to_wire(workflow.defaults[ph]) for ph in accepts if ph in workflow.defaults}
            spec = StepSpec(name=step.name, task=step.task, notebook=os.path.basename(workflow.path), mode=mode, cwd=base,
                            parents=list(step.parents), options=step.options.to_json(), fingerprint=prints[step.name],
                            job=job.name, accepts=accepts, command=dict(step.command), defaults=defaults,
                            fixed=to_wire(job.parameters))
            write_json(layout.spec(step.task), spec.to_json(), signed=True)
            entry.update(accepts=accepts)
        jobs.append(entry)
    manifest = {
        "notebook": os.path.abspath(workflow.path),
        "pipeline": workflow.name,
        "sha256": workflow.notebook.sha256,
        "mode": mode,
        "nb2flow_version": __version__,
        "parameters": [{"name": p.name, "default": p.source} for p in workflow.parameters],
        "installs": [],
        "jobs": jobs,
        "steps": [{"name": s.name, "task": s.task, "parents": list(s.parents), "options": s.options.to_json(),
                   "fingerprint": prints[s.name], "job": s.job} for s in workflow.steps],
    }
    write_json(layout.pipeline, manifest, signed=True)
    return Bundle(path=os.path.abspath(layout.root), mode=mode, fingerprints=prints, manifest=manifest)
