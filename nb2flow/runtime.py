#!/usr/bin/env python3
"""nb2flow step runtime: runs one step of a pipeline, on this machine or in a pod.

nb2flow copies this file into every run bundle as ``nb2flow_step.py``. It needs only what
every Jupyter image has: Python, nbformat, nbclient and ipykernel (notebook mode), or just
Python (script mode). nb2flow and papermill need not be installed where it runs.

    python nb2flow_step.py --bundle DIR --run-dir DIR --step TASK
                           [--params-file FILE] [--param NAME=JSON ...] [--cwd DIR] [--wait]

It reads ``DIR/steps/TASK.json`` (the step's spec) and ``TASK.ipynb`` or ``TASK.py``, injects
the parameters as papermill does, loads the values the step reads from earlier steps'
folders under ``RUN/values/``, runs the cells, saves the values later steps read, and keeps
``RUN/steps/TASK/status.json`` current (state, current cell, error) for whoever watches.
Every file is written to a temporary name and renamed, so a reader never sees half of it.

Exit statuses: 0 succeeded, 1 the step's code raised, 3 the kernel died, 4 cancelled
before it started, 130 interrupted.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import linecache
import math
import os
import pickle
import re
import signal
import sys
import time
import traceback
import types

RUNTIME_VERSION = 1
EXIT_OK, EXIT_FAILED, EXIT_KERNEL_DIED, EXIT_CANCELLED, EXIT_INTERRUPTED = 0, 1, 3, 4, 130
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_IN_RE = re.compile(r"Cell In\s?\[(\d+)\], line (\d+)")
SCRIPT_MARK_RE = re.compile(r"^# %% \[nb2flow (\w+)(?: cell (\d+))?\]\s*$", re.M)


# ----------------------------------------------------------------------------- files


def write_atomic(path: str, data: bytes | str) -> None:
    """Write to a temporary name in the same folder, then rename over ``path``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def write_json(path: str, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ----------------------------------------------------------------------------- values


class UntransportableValue(Exception):
    """A value a later step reads cannot be saved (open file, connection, generator, lock ...)."""


_KNOWN_UNTRANSPORTABLE = (
    ("_io.", "an open file"),
    ("io.", "an open file or stream"),
    ("socket.", "a network socket"),
    ("sqlite3.", "a database connection"),
    ("_thread.", "a thread lock"),
    ("threading.", "a thread or lock"),
    ("multiprocessing.", "a process or pool"),
    ("asyncio.", "an event-loop object"),
    ("psycopg", "a database connection"),
    ("pymysql.", "a database connection"),
    ("sqlalchemy.engine", "a database engine or connection"),
)


def _untransportable_kind(value) -> str | None:
    if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType)):
        return "a generator"
    if isinstance(value, types.CoroutineType):
        return "a coroutine"
    if isinstance(value, types.FrameType):
        return "a stack frame"
    if isinstance(value, io.IOBase):
        return "an open file or stream"
    qualname = f"{type(value).__module__}.{type(value).__qualname__}"
    for prefix, kind in _KNOWN_UNTRANSPORTABLE:
        if qualname.startswith(prefix) and not isinstance(value, (type, types.ModuleType)):
            if prefix in ("io.", "_io.") and not hasattr(value, "read") and not hasattr(value, "write"):
                continue
            return kind
    return None


def _is_plain_ndarray(value) -> bool:
    mod = type(value).__module__
    if mod != "numpy":
        return False
    import numpy as np

    return type(value) is np.ndarray and value.dtype != object and not value.dtype.hasobject


def dump_value(value, path_base: str) -> str:
    """Save one value next to ``path_base`` (``.npy`` for plain arrays, else ``.pkl``); return the file."""
    if _is_plain_ndarray(value):
        import numpy as np

        final = path_base + ".npy"
        tmp = f"{final}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
            os.replace(tmp, final)
        except BaseException:
            _unlink(tmp)
            raise
        return final
    final = path_base + ".pkl"
    tmp = f"{final}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            try:
                pickle.dump(value, fh, protocol=5)
            except (pickle.PicklingError, TypeError, AttributeError) as plain_error:
                fh.seek(0)
                fh.truncate()
                try:
                    import cloudpickle  # only where plain pickle cannot work
                except ImportError:
                    raise plain_error from None
                cloudpickle.dump(value, fh, protocol=5)
        os.replace(tmp, final)
    except BaseException:
        _unlink(tmp)
        raise
    return final


def load_value(path_base: str):
    if os.path.exists(path_base + ".npy"):
        import numpy as np

        return np.load(path_base + ".npy", allow_pickle=False)
    with open(path_base + ".pkl", "rb") as fh:
        return pickle.load(fh)


def load_values(namespace: dict, entries: list, values_root: str) -> None:
    """Load each (name, providing step task, providing step name) into ``namespace``."""
    for name, task, step in entries:
        base = os.path.join(values_root, task, name)
        if not (os.path.exists(base + ".npy") or os.path.exists(base + ".pkl")):
            raise FileNotFoundError(
                f"nb2flow: `{name}` from step {step} is missing ({base}.pkl); did step {step} finish in this run?"
            )
        namespace[name] = load_value(base)


def check_inside(path: str, root: str) -> str:
    """``path`` with symlinks resolved, refusing one that leads out of ``root`` (the run folder)."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise PermissionError(f"nb2flow: {path} leads out of the run folder (to {real}); refusing to write there")
    return path


def save_values(namespace: dict, names: list, out_dir: str, step: str, consumers: dict) -> None:
    """Save the values later steps read; a value that cannot travel fails with the fix."""
    check_inside(out_dir, os.path.dirname(os.path.dirname(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    check_inside(out_dir, os.path.dirname(os.path.dirname(out_dir)))
    for name in names:
        readers = ", ".join(consumers.get(name, [])) or "a later step"
        first_reader = (consumers.get(name) or ["the consuming step"])[0]
        if name not in namespace:
            continue  # unbound on this path (e.g. a branch not taken); the reader will say so
        value = namespace[name]
        type_name = f"{type(value).__module__}.{type(value).__qualname__}"
        kind = _untransportable_kind(value)
        fix = f"re-create it in step {first_reader}, or move the cell that creates it to a setup cell"
        if kind:
            raise UntransportableValue(
                f"cannot pass `{name}` ({kind}, {type_name}) from step {step} to step {readers}: {fix}"
            ) from None
        try:
            dump_value(value, os.path.join(out_dir, name))
        except (pickle.PicklingError, TypeError, AttributeError, ValueError) as exc:
            raise UntransportableValue(
                f"cannot pass `{name}` ({type_name}) from step {step} to step {readers}: it cannot be pickled ({exc}); {fix}"
            ) from None


# ----------------------------------------------------------------------------- parameters


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


def parameters_source(params: dict) -> str:
    lines = ["# Parameters"]
    lines += [f"{name} = {python_literal(value)}" for name, value in params.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- status


class Status:
    """The step's status file: what the watcher (local executor or ``nb2flow status``) reads."""

    def __init__(self, path: str, step: str, attempt: int) -> None:
        self.path = path
        self.data = {"step": step, "state": "starting", "pid": os.getpid(), "attempt": attempt,
                     "started": time.time(), "runtime_version": RUNTIME_VERSION}
        self.write()

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.write()

    def write(self) -> None:
        try:
            write_json(self.path, self.data)
        except OSError:
            pass  # a full or read-only disk must not hide the step's own outcome


# ----------------------------------------------------------------------------- running


class StepRun:
    def __init__(self, args) -> None:
        self.bundle = os.path.abspath(args.bundle)
        self.run_dir = os.path.abspath(args.run_dir)
        self.task = args.step
        with open(os.path.join(self.bundle, "steps", f"{self.task}.json"), encoding="utf-8") as fh:
            self.spec = json.load(fh)
        self.name = self.spec["name"]
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.task):
            raise SystemExit(f"nb2flow: {self.task!r} is not a step task name")
        self.step_dir = check_inside(os.path.join(self.run_dir, "steps", self.task), self.run_dir)
        os.makedirs(self.step_dir, exist_ok=True)
        check_inside(self.step_dir, self.run_dir)
        self.values_root = os.path.join(self.run_dir, "values")
        self.cwd = os.path.abspath(args.cwd or self.spec.get("cwd") or os.getcwd())
        self.wait = args.wait
        self.params = {}
        if args.params_file:
            with open(args.params_file, encoding="utf-8") as fh:
                self.params.update(json.load(fh))
        for item in args.param or []:
            name, _, raw = item.partition("=")
            try:
                self.params[name] = json.loads(raw)
            except ValueError:
                self.params[name] = raw  # typed by hand (e.g. in the Argo UI) without JSON quotes
        self.status = Status(os.path.join(self.step_dir, "status.json"), self.name, args.attempt)
        self.log_path = os.path.join(self.step_dir, "output.log")
        self.kernel_pid = None

    # -- shared pieces
    def wait_for_go(self) -> bool:
        """Block until the watcher says go (parents done) or cancel."""
        go = os.path.join(self.step_dir, "go")
        cancel = os.path.join(self.step_dir, "cancel")
        self.status.update(state="waiting")
        while True:
            if os.path.exists(cancel):
                return False
            if os.path.exists(go):
                self.status.update(state="running", running_since=time.time())
                return True
            time.sleep(0.01)

    def ready_for(self, role: str | None) -> bool:
        """Before running a cell: past the setup cells, wait for go (with --wait); False if cancelled."""
        if role in ("setup", "parameters", "injected"):
            return True
        if self.wait and self.status.data["state"] not in ("running", "waiting"):
            if not self.wait_for_go():
                return False
        if self.status.data["state"] != "running":
            self.status.update(state="running", running_since=time.time())
        return True

    def load_entries(self) -> list:
        return [[i["name"], i["from_task"], i["from"]] for i in self.spec["inputs"] if i["kind"] == "data"]

    def runtime_import(self) -> str:
        here = self.bundle  # the copy of this file that ships with the step files
        return (
            f"import sys as _nb2flow_sys\n_nb2flow_sys.path.insert(0, {here!r})\n"
            "import nb2flow_step as _nb2flow\n"
            f"_nb2flow_sys.path.remove({here!r})\ndel _nb2flow_sys\n"
        )

    def load_source(self) -> str:
        return (
            "# nb2flow: load the values this step reads from earlier steps\n"
            + self.runtime_import()
            + f"_nb2flow.load_values(globals(), {self.load_entries()!r}, {self.values_root!r})\n"
        )

    def save_source(self) -> str:
        out_dir = os.path.join(self.values_root, self.task)
        return (
            "# nb2flow: save the values later steps read\n"
            + self.runtime_import()
            + f"_nb2flow.save_values(globals(), {self.spec['outputs']!r}, {out_dir!r}, {self.name!r}, {self.spec['consumers']!r})\n"
            + "del _nb2flow\n"
        )

    def fail(self, cell_number, ename, evalue, tb_lines, state="failed") -> None:
        self.status.update(
            state=state,
            ended=time.time(),
            error={"cell": cell_number, "ename": ename, "evalue": evalue, "traceback": tb_lines},
        )

    # -- notebook mode
    def run_notebook(self) -> int:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError, DeadKernelError
        from jupyter_client.kernelspec import NoSuchKernel

        nb = nbformat.read(os.path.join(self.bundle, "steps", f"{self.task}.ipynb"), as_version=4)
        self.inject_parameters(nb, nbformat)
        for cell in nb.cells:
            role = cell.metadata.get("nb2flow", {}).get("role")
            if role == "load":
                cell.source = self.load_source()
            elif role == "save":
                cell.source = self.save_source()
        kernel_name = self.spec.get("kernel_name") or "python3"
        client = NotebookClient(
            nb, kernel_name=kernel_name, timeout=None, allow_errors=False, record_timing=True,
            resources={"metadata": {"path": self.cwd}}, shutdown_kernel="immediate",
            # parallel kernels would all write IPython's one sqlite history file
            extra_arguments=["--HistoryManager.enabled=False"],
        )
        exec_counts: dict[int, int] = {}
        state = EXIT_OK
        log = open(self.log_path, "a", encoding="utf-8")
        # Unix sockets in a private folder instead of TCP ports: kernels started side by side
        # cannot race for a port (jupyter/jupyter_client#154), and nothing listens on the network.
        import tempfile

        ipc_dir = tempfile.mkdtemp(prefix="nb2flow-k-")

        def new_kernel_manager():
            km = client.create_kernel_manager()
            if os.name == "posix":
                km.transport = "ipc"
                km.ip = os.path.join(ipc_dir, "k")
            return km

        try:
            try:
                client.km = new_kernel_manager()
                client.start_new_kernel(cwd=self.cwd)
            except NoSuchKernel:
                log.write(f"nb2flow: kernel {kernel_name!r} is not installed here; using python3\n")
                client.kernel_name = "python3"
                client.km = new_kernel_manager()
                client.start_new_kernel(cwd=self.cwd)
            client.start_new_kernel_client()
            self.kernel_pid = _kernel_pid(client.km)
            self.status.update(state="started", kernel_pid=self.kernel_pid)
            for index, cell in enumerate(nb.cells):
                meta = cell.metadata.get("nb2flow", {})
                role = meta.get("role")
                if not self.ready_for(role):
                    return self.cancelled()
                self.status.update(cell=meta.get("cell"), role=role)
                try:
                    client.execute_cell(cell, index)
                finally:
                    if cell.get("execution_count"):
                        exec_counts[cell.execution_count] = meta.get("cell")
                    _append_outputs(log, cell)
                if role == "save":
                    self.status.update(state="succeeded", ended=time.time(), cell=None)
            if self.status.data["state"] != "succeeded":
                self.status.update(state="succeeded", ended=time.time(), cell=None)
        except CellExecutionError:
            cell = nb.cells[index]
            meta = cell.metadata.get("nb2flow", {})
            ename, evalue, tb = _error_from_outputs(cell)
            tb = _user_traceback(tb, exec_counts, meta.get("role"))
            self.fail(meta.get("cell"), ename, evalue, tb)
            state = EXIT_FAILED
        except DeadKernelError as exc:
            self.fail(self.status.data.get("cell"), "DeadKernelError", _kernel_death_reason(client.km, exc), [], state="kernel-died")
            state = EXIT_KERNEL_DIED
        except KeyboardInterrupt:
            self.status.update(state="interrupted", ended=time.time())
            state = EXIT_INTERRUPTED
        finally:
            log.close()
            self.stop_kernel(client)
            self.remove_partial_files()
            import shutil

            shutil.rmtree(ipc_dir, ignore_errors=True)
            try:
                write_atomic(os.path.join(self.step_dir, f"{self.task}.ipynb"), nbformat.writes(nb))
            except OSError:
                pass
        return state

    def remove_partial_files(self) -> None:
        """Temporary files a killed kernel left mid-write (a resume never reads them; don't keep them)."""
        for folder in (os.path.join(self.values_root, self.task), self.step_dir):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if ".tmp-" in name:
                    _unlink(os.path.join(folder, name))

    def cancelled(self) -> int:
        self.status.update(state="cancelled", ended=time.time())
        return EXIT_CANCELLED

    def stop_kernel(self, client) -> None:
        try:
            if client.km is not None:
                client._cleanup_kernel()  # nbclient's own: stop channels, shut the kernel down now
        except Exception:
            pass
        if self.kernel_pid:
            try:
                os.killpg(self.kernel_pid, signal.SIGKILL)  # the kernel runs in its own session
            except (OSError, ProcessLookupError):
                pass

    def inject_parameters(self, nb, nbformat) -> None:
        if not self.params:
            return
        source = parameters_source(self.params)
        for cell in nb.cells:
            if "injected-parameters" in cell.metadata.get("tags", []):
                cell.source = source
                return
        new = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"], "nb2flow": {"role": "injected"}})
        index = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), 0)
        nb.cells.insert(index, new)

    # -- script mode
    def run_script(self) -> int:
        with open(os.path.join(self.bundle, "steps", f"{self.task}.py"), encoding="utf-8") as fh:
            text = fh.read()
        chunks = _split_script(text)
        if self.params:
            at = next((i + 1 for i, c in enumerate(chunks) if c[0] == "parameters"), 0)
            existing = next((i for i, c in enumerate(chunks) if c[0] == "injected"), None)
            if existing is not None:
                chunks[existing] = ("injected", chunks[existing][1], parameters_source(self.params))
            else:
                chunks.insert(at, ("injected", None, parameters_source(self.params)))
        module = types.ModuleType("__main__")
        module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = module  # classes defined by the step pickle as __main__.X
        ns = module.__dict__
        os.chdir(self.cwd)
        sys.path.insert(0, self.cwd)
        try:
            for role, cell_number, source in chunks:
                if not self.ready_for(role):
                    return self.cancelled()
                self.status.update(cell=cell_number, role=role)
                if role == "load":
                    load_values(ns, self.load_entries(), self.values_root)
                    continue
                if role == "save":
                    save_values(ns, self.spec["outputs"], os.path.join(self.values_root, self.task), self.name, self.spec["consumers"])
                    continue
                filename = f"<cell {cell_number}>" if cell_number else f"<nb2flow {role}>"
                linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
                exec(compile(source, filename, "exec"), ns)
            self.status.update(state="succeeded", ended=time.time(), cell=None)
            return EXIT_OK
        except KeyboardInterrupt:
            self.status.update(state="interrupted", ended=time.time())
            return EXIT_INTERRUPTED
        except BaseException as exc:  # the user's code raised: report it against the cell
            if isinstance(exc, SystemExit) and exc.code in (None, 0):
                self.status.update(state="succeeded", ended=time.time(), cell=None)
                return EXIT_OK
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell ")]
            tb = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc) if frames else []
            tb = [re.sub(r'File "<cell (\d+)>"', r"cell \1", line) for line in tb]
            cell_number = self.status.data.get("cell")
            if frames:
                cell_number = int(frames[-1].filename[6:-1]) if frames[-1].filename[6:-1].isdigit() else cell_number
            self.fail(cell_number, type(exc).__name__, str(exc), [l.rstrip("\n") for l in tb])
            return EXIT_FAILED


def _split_script(text: str) -> list:
    """Chunks of a step script: (role, original cell number or None, source)."""
    marks = list(SCRIPT_MARK_RE.finditer(text))
    chunks = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        chunks.append((mark.group(1), int(mark.group(2)) if mark.group(2) else None, text[mark.end():end].strip("\n") + "\n"))
    return chunks


def _kernel_pid(km):
    provisioner = getattr(km, "provisioner", None)
    for obj in (provisioner, getattr(provisioner, "process", None), getattr(km, "kernel", None)):
        pid = getattr(obj, "pid", None)
        if isinstance(pid, int):
            return pid
    return None


def _kernel_death_reason(km, exc) -> str:
    code = None
    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    if process is not None:
        code = process.poll()
    if code is not None and code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = " (killed: out of memory?)" if sig == signal.SIGKILL else ""
        return f"the kernel died from signal {name}{hint}"
    if code is not None:
        return f"the kernel exited with status {code}"
    return f"the kernel died ({exc})"


def _error_from_outputs(cell):
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), out.get("evalue", ""), [ANSI_RE.sub("", t) for t in out.get("traceback", [])]
    return "Error", "the cell failed", []


def _user_traceback(tb: list, exec_counts: dict, role) -> list:
    """The part of an IPython traceback inside the user's code, with ``Cell In[k]`` as ``cell N``."""
    if role in ("load", "save"):
        return []  # nb2flow's own cell: the message says it all
    lines = []
    for block in tb:
        for line in block.splitlines():
            if "site-packages/ipykernel" in line or "nb2flow_step.py" in line:
                continue
            lines.append(CELL_IN_RE.sub(lambda m: f"cell {exec_counts.get(int(m.group(1)), '?')}, line {m.group(2)}", line))
    while lines and set(lines[0].strip()) <= {"-"}:
        lines.pop(0)
    return lines


def _append_outputs(log, cell) -> None:
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            log.write(out.get("text", ""))
        elif kind == "error":
            log.write("\n".join(ANSI_RE.sub("", t) for t in out.get("traceback", [])) + "\n")
    log.flush()


class _ForkedKernel:
    """The Popen-like handle jupyter_client's local provisioner expects, for a forked kernel."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                import subprocess

                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            time.sleep(0.005)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_SERVER_SYS_PATH: list | None = None  # sys.path of a fresh interpreter, recorded by serve()


def _enable_forked_kernels() -> None:
    """Start the native IPython kernel by forking this pre-imported process (local runs only).

    A kernel started with ``python -m ipykernel_launcher`` spends most of its start-up
    importing IPython, ipykernel, zmq and tornado; the fork server has imported them once.
    The forked kernel is set up as a fresh one would be: its own session, environment,
    working directory, argv, sys.path, random seeds and event loop.
    """
    from jupyter_client.provisioning import local_provisioner

    original = local_provisioner.launch_kernel

    def launch(cmd, stdin=None, stdout=None, stderr=None, env=None, independent=False, cwd=None, **kw):
        native = len(cmd) >= 3 and cmd[1:3] == ["-m", "ipykernel_launcher"] and os.path.realpath(cmd[0]) == os.path.realpath(sys.executable)
        if not native or "ipykernel.kernelapp" not in sys.modules:
            return original(cmd, stdin=stdin, stdout=stdout, stderr=stderr, env=env, independent=independent, cwd=cwd, **kw)
        sys.stdout.flush()
        sys.stderr.flush()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid:
            # jupyter_client reads the kernel's process group as soon as this returns
            os.close(ready_w)
            os.read(ready_r, 1)
            os.close(ready_r)
            return _ForkedKernel(pid)
        code = 0
        try:
            os.setsid()
            os.close(ready_r)
            os.write(ready_w, b"1")
            os.close(ready_w)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.environ.clear()
            os.environ.update(env or {})
            os.chdir(cwd or os.getcwd())
            sys.argv = [sys.modules["ipykernel_launcher"].__file__ if "ipykernel_launcher" in sys.modules else "ipykernel_launcher"] + list(cmd[3:])
            sys.path[:] = list(_SERVER_SYS_PATH or sys.path)
            import asyncio
            import random

            random.seed()
            asyncio.events._set_running_loop(None)
            asyncio.set_event_loop(asyncio.new_event_loop())
            for name in [m for m in sys.modules if m == "__main__"]:
                sys.modules[name] = types.ModuleType("__main__")
            from ipykernel.kernelapp import IPKernelApp

            IPKernelApp.launch_instance(argv=list(cmd[3:]))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    local_provisioner.launch_kernel = launch


def serve() -> int:
    """Fork server for local runs: import the heavy modules once, then fork one child per step.

    Reads JSON lines ``{"id": ..., "argv": [...], "log": path}`` on stdin; each child runs
    :func:`main` with that argv in its own session, its output going to ``log``. Writes
    ``{"id": ..., "pid": n}`` when a child starts and ``{"pid": n, "code": c}`` when it ends.
    On end of input it stops every child still running.
    """
    import select

    global _SERVER_SYS_PATH
    _SERVER_SYS_PATH = [p for p in sys.path[1:]]  # as `python -m ipykernel_launcher` has it
    try:  # what every notebook-mode step imports; a failed import only costs speed
        import nbformat  # noqa: F401
        from nbclient import NotebookClient  # noqa: F401
        from jupyter_client.kernelspec import KernelSpecManager  # noqa: F401
        import ipykernel.kernelapp  # noqa: F401  (the kernel itself, forked per step)
        import ipykernel_launcher  # noqa: F401
        _enable_forked_kernels()
    except ImportError:
        pass
    children: set[int] = set()
    out = sys.stdout

    def say(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            say({"pid": pid, "code": os.waitstatus_to_exitcode(status)})

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor decides what to stop
    stdin = sys.stdin.fileno()
    buffer = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.01)
        reap()
        if not ready:
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = EXIT_FAILED
                try:
                    os.setsid()
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    devnull = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(devnull, 0)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    code = main(request["argv"])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else EXIT_FAILED
                except BaseException:
                    traceback.print_exc()
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            children.add(pid)
            say({"id": request["id"], "pid": pid})
    for pid in list(children):
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass
    return 0


def main(argv=None) -> int:
    if argv is None and sys.argv[1:] == ["--serve"]:
        return serve()
    parser = argparse.ArgumentParser(prog="nb2flow_step.py", description="Run one nb2flow step.")
    parser.add_argument("--bundle", required=True, help="folder with nb2flow_step.py and steps/")
    parser.add_argument("--run-dir", required=True, help="the run's folder (values, statuses, outputs)")
    parser.add_argument("--step", required=True, help="the step's task name")
    parser.add_argument("--params-file")
    parser.add_argument("--param", action="append", help="NAME=JSON, repeatable")
    parser.add_argument("--cwd", help="working directory (the notebook's folder)")
    parser.add_argument("--wait", action="store_true", help="start the kernel, then wait for RUN/steps/TASK/go")
    parser.add_argument("--attempt", type=int, default=1)
    args = parser.parse_args(argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    step = StepRun(args)
    mode = step.spec.get("mode", "notebook")
    return step.run_script() if mode == "script" else step.run_notebook()


if __name__ == "__main__":
    sys.exit(main())
