"""Script mode: the step as a plain Python script, its chunks executed in this process (no kernel)."""

from __future__ import annotations

import builtins
import linecache
import os
import re
import sys
import types

from .params import injection_index, parameters_source
from .protocol import ExitStatus, Role, StepState
from .tracebacks import script_traceback
from .values import load_values, save_values

SCRIPT_MARK_RE = re.compile(r"^# %% \[nb2flow (\w+)(?: cell (\d+))?\]\s*$", re.M)


def script_mark(role, cell_number) -> str:
    """The line that starts a chunk of a step script (read back by :func:`split_script`)."""
    return f"# %% [nb2flow {Role(role).value}" + (f" cell {cell_number}]" if cell_number is not None else "]")


def split_script(text: str) -> list:
    """Chunks of a step script: (role, original cell number or None, source)."""
    marks = list(SCRIPT_MARK_RE.finditer(text))
    chunks = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        chunks.append((Role(mark.group(1)), int(mark.group(2)) if mark.group(2) else None,
                       text[mark.end():end].strip("\n") + "\n"))
    return chunks


def run_script(step) -> int:
    with open(step.bundle.script(step.task), encoding="utf-8") as fh:
        chunks = split_script(fh.read())
    if step.params:
        index, replace = injection_index([role for role, _, _ in chunks])
        chunk = (Role.INJECTED, chunks[index][1] if replace else None, parameters_source(step.params))
        if replace:
            chunks[index] = chunk
        else:
            chunks.insert(index, chunk)
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module  # classes defined by the step pickle as __main__.X
    ns = module.__dict__
    os.chdir(step.cwd)
    sys.path.insert(0, step.cwd)
    try:
        for role, cell_number, source in chunks:
            if not step.ready_for(role):
                return step.cancelled()
            step.status.update(cell=cell_number, role=role.value)
            if role == Role.LOAD:
                load_values(ns, step.load_entries(), step.run.values_root)
                continue
            if role == Role.SAVE:
                save_values(ns, step.spec["outputs"], step.values_dir, step.name, step.spec["consumers"])
                continue
            filename = f"<cell {cell_number}>" if cell_number else f"<nb2flow {role.value}>"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            exec(compile(source, filename, "exec"), ns)
        step.status.finish(StepState.SUCCEEDED)
        return ExitStatus.OK
    except KeyboardInterrupt:
        step.status.finish(StepState.INTERRUPTED)
        return ExitStatus.INTERRUPTED
    except BaseException as exc:  # the user's code raised: report it against the cell
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            step.status.finish(StepState.SUCCEEDED)
            return ExitStatus.OK
        cell_number, tb = script_traceback(exc)
        step.fail(cell_number or step.status.data.get("cell"), type(exc).__name__, str(exc), tb)
        return ExitStatus.FAILED
