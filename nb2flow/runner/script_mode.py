"""Script mode: the step as a plain Python script, its chunks executed in this process (no kernel)."""

from __future__ import annotations

import builtins
import linecache
import os
import re
import sys
import types

from .auth import verified_text
from .params import injection_index, parameters_source
from .protocol import ExitStatus, Role, StepState
from .tracebacks import OutputCap, echoes_output, no_surrogates, script_traceback
from .values import check_unchanged, load_random_state, load_values, note_unchanged, save_random_state, save_values

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


class _Capture:
    """A stream that keeps what a chunk prints (for the executed notebook), appends it to
    ``output.log`` and passes it on to the process's own stream (the pod log)."""

    def __init__(self, name: str, log, echo, banner: list, where: str = "output.log") -> None:
        self.name, self.log, self.echo = name, log, echo
        self.banner = banner  # shared by stdout and stderr: [the frame line still to show, or None]
        self.parts: list = []
        self.where = where
        self.cap = OutputCap(where)  # what the chunk's notebooks keep: its start and end (output.log: all)
        self.encoding = getattr(echo, "encoding", "utf-8")

    def write(self, text: str) -> int:
        text = no_surrogates(text)
        if self.banner[0] and text and self.echo is not None:
            banner, self.banner[0] = self.banner[0], None
            try:
                self.echo.write(banner + "\n")
            except (OSError, ValueError):
                pass
        if self.cap.keep(self.name, text):
            self.parts.append(text)
        for stream in (self.log, self.echo):
            if stream is None:
                continue
            try:
                stream.write(text)
            except (OSError, ValueError):
                pass
        return len(text)

    def flush(self) -> None:
        for stream in (self.log, self.echo):
            if stream is None:
                continue
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    def isatty(self) -> bool:
        return False

    def take(self) -> list:
        """The chunk's outputs of this stream, as its notebooks keep them."""
        text, self.parts = "".join(self.parts), []
        closing, self.cap = self.cap.closing_outputs(), OutputCap(self.where)
        return ([{"output_type": "stream", "name": self.name, "text": text}] if text else []) + closing


def _executed_cell(role, cell_number, source: str, count: int, outputs: list) -> dict:
    return {"cell_type": "code", "execution_count": count, "id": f"nb2flow-{count:04d}",
            "metadata": {"nb2flow": {"role": role.value, **({"cell": cell_number} if cell_number is not None else {})}},
            "outputs": outputs, "source": source}


def _stream_outputs(out: _Capture, err: _Capture) -> list:
    return out.take() + err.take()


def run_script(step) -> int:
    """Run the step script's chunks; write ``output.log`` and an executed notebook as notebook mode does
    (streams and errors only: rich displays need a kernel)."""
    import json

    from .files import write_atomic

    log = open(step.run.output_log(step.task), "a", encoding="utf-8")
    banner: list = [None]
    echo = echoes_output()  # in a pod; a local run's stdout is runner.log, and output.log has it all already
    where = step.run.output_log(step.task)
    out = _Capture("stdout", log, sys.stdout if echo else None, banner, where)
    err = _Capture("stderr", log, sys.stderr if echo else None, banner, where)
    saved = sys.stdout, sys.stderr
    executed: list = []
    sys.stdout, sys.stderr = out, err
    try:
        return _run_chunks(step, executed, out, err)
    finally:
        sys.stdout, sys.stderr = saved
        log.close()
        doc = {"cells": executed, "metadata": {"nb2flow": {"step": step.name, "mode": "script"}}, "nbformat": 4, "nbformat_minor": 5}
        try:
            write_atomic(step.run.executed(step.task), json.dumps(doc, indent=1, ensure_ascii=False))
        except OSError:
            pass


def _run_chunks(step, executed: list, out: _Capture, err: _Capture) -> int:
    chunks = split_script(verified_text(step.bundle.script(step.task)))
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
    current = None
    try:
        for count, (role, cell_number, source) in enumerate(chunks, 1):
            if not step.ready_for(role):
                return step.cancelled()
            step.status.update(cell=cell_number, role=role.value)
            # the log's frame, written before the chunk's first output (not part of the cell's output)
            out.banner[0] = f"----- {f'cell {cell_number}' if cell_number else 'nb2flow ' + role.value + ' cell'} (step:{step.name}) -----"
            current = _executed_cell(role, cell_number, source, count, [])
            executed.append(current)
            if role == Role.LOAD:
                load_values(ns, step.load_entries(), step.run.values_root)
                if step.random_state_from:
                    load_random_state(step.random_state_from)
                if step.spec.unchanged:
                    note_unchanged(ns, sorted(step.spec.unchanged), step.run.unchanged(step.task))
            elif role == Role.SAVE:
                if step.spec.unchanged:
                    check_unchanged(ns, step.spec.unchanged, step.run.unchanged(step.task), step.name)
                save_values(ns, step.spec.outputs, step.values_dir, step.name, step.spec.consumers, step.spec.optional_outputs)
                if step.saves_random_state:
                    save_random_state(step.run.random_state(step.task))
            else:
                filename = f"<cell {cell_number}>" if cell_number else f"<nb2flow {role.value}>"
                linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
                exec(compile(source, filename, "exec"), ns)
            current["outputs"] = _stream_outputs(out, err)
        step.status.finish(StepState.SUCCEEDED)
        return ExitStatus.OK
    except KeyboardInterrupt:
        step.status.finish(StepState.INTERRUPTED)
        return ExitStatus.INTERRUPTED
    except BaseException as exc:  # the user's code raised, sys.exit() included (as a kernel reports it): against the cell
        cell_number, tb = script_traceback(exc)
        if current is not None:
            tb = [no_surrogates(line) for line in tb]
            current["outputs"] = _stream_outputs(out, err) + [
                {"output_type": "error", "ename": type(exc).__name__, "evalue": no_surrogates(str(exc)), "traceback": tb}]
            err.log.write("\n".join(tb) + "\n")
        step.fail(cell_number or step.status.data.get("cell"), type(exc).__name__, str(exc), tb)
        return ExitStatus.FAILED
