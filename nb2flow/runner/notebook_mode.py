"""Notebook mode: the step notebook executed cell by cell with nbclient in an IPython kernel."""

from __future__ import annotations

import os
import sys

from .auth import private_key_file, verified_text
from .files import write_atomic
from .kernels import kernel_pid, kill_forked_kernels, prompt_kernel_client, use_forking_provisioner
from .params import injection_index, parameters_source
from .protocol import RUNNER_FILE, ExitStatus, Role, StepState
from .tracebacks import OutputCap, append_outputs, echoes_output, error_from_outputs, kernel_death_reason, user_traceback


def _runner_import(bundle_root: str) -> str:
    """Source that gives a kernel the runner shipped with the step files as ``_nb2flow``: the module this
    process already runs when the kernel is its fork, else the bundle's file, run only when its SHA-256 is
    this runner's own (never an import from the shared folder, where a planted module or ``.pyc`` could
    stand in)."""
    path = os.path.join(bundle_root, RUNNER_FILE)
    digest = globals().get("RUNNER_DIGEST") or _file_digest(path)
    return (
        "import sys as _s, hashlib as _h, types as _t\n"
        "_m = _s.modules.get('nb2flow_step')\n"
        f"if getattr(_m, 'RUNNER_DIGEST', None) != {digest!r}:\n"
        f"    with open({path!r}, 'rb') as _f:\n"
        "        _b = _f.read()\n"
        f"    if _h.sha256(_b).hexdigest() != {digest!r}:\n"
        f"        raise RuntimeError('nb2flow: ' + {path!r} + ': not the step runner nb2flow wrote; refusing to run it')\n"
        "    _m = _t.ModuleType('nb2flow_step')\n"
        f"    _m.__file__, _m.RUNNER_DIGEST = {path!r}, {digest!r}\n"
        "    _s.modules['nb2flow_step'] = _m\n"
        f"    exec(compile(_b, {path!r}, 'exec'), _m.__dict__)\n"
        "_nb2flow = _m\n"
        "del _s, _h, _t, _m\n"
    )


def _file_digest(path: str) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _runner_cell(step, comment: str, calls: list) -> str:
    """A cell of nb2flow's own: import the bundle's runner as ``_nb2flow``, make ``calls``, forget it again."""
    return (f"# nb2flow: {comment}\n" + _runner_import(step.bundle.root)
            + "".join(f"_nb2flow.{call}\n" for call in calls) + "del _nb2flow\n")


def load_source(step) -> str:
    """The load cell: the values this step reads, from their providers' folders (and the random state)."""
    calls = [f"use_key_file({step.key_file!r})",
             f"load_values(globals(), {step.load_entries()!r}, {step.run.values_root!r})"]
    if step.random_state_from:
        calls.append(f"load_random_state({step.random_state_from!r})")
    if step.spec.unchanged:
        calls.append(f"note_unchanged(globals(), {sorted(step.spec.unchanged)!r}, {step.run.unchanged(step.task)!r})")
    return _runner_cell(step, "load the values this step reads from earlier steps", calls)


def save_source(step) -> str:
    """The save cell: the values later steps read (and the random state the next step continues from)."""
    calls = [f"use_key_file({step.key_file!r})"]
    if step.spec.unchanged:
        calls.append(f"check_unchanged(globals(), {step.spec.unchanged!r}, {step.run.unchanged(step.task)!r}, {step.name!r})")
    calls.append(f"save_values(globals(), {step.spec.outputs!r}, {step.values_dir!r}, {step.name!r}, {step.spec.consumers!r}, "
                 f"{step.spec.optional_outputs!r})")
    if step.saves_random_state:
        calls.append(f"save_random_state({step.run.random_state(step.task)!r})")
    return _runner_cell(step, "save the values later steps read", calls)


def cell_banner(step, cell) -> str:
    """The line before a cell's output in the log: which cell of the notebook, in which step."""
    meta = cell.metadata.get("nb2flow", {})
    number = meta.get("cell")
    what = f"cell {number}" if number else f"nb2flow's {meta.get('role', 'cell')} cell"
    return f"----- {what} (step:{step.name}) -----"


def inject_parameters(nb, params: dict, nbformat) -> None:
    """papermill's ``injected-parameters`` cell, right after the notebook's parameters cell."""
    if not params:
        return
    source = parameters_source(params)
    index, replace = injection_index([c.metadata.get("nb2flow", {}).get("role") for c in nb.cells])
    if replace:
        nb.cells[index].source = source
        return
    meta = {"tags": ["injected-parameters"], "nb2flow": {"role": Role.INJECTED.value}}
    nb.cells.insert(index, nbformat.v4.new_code_cell(source, metadata=meta))


def run_notebook(step) -> int:
    import tempfile

    import nbformat
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    nb = nbformat.reads(verified_text(step.bundle.notebook(step.task)), as_version=4)
    key_dir, step.key_file = private_key_file()  # the kernel's load and save cells read the key from here
    inject_parameters(nb, step.params, nbformat)
    for cell in nb.cells:
        role = cell.metadata.get("nb2flow", {}).get("role")
        if role == Role.LOAD:
            cell.source = load_source(step)
        elif role == Role.SAVE:
            cell.source = save_source(step)
    kernel_name = step.spec.kernel_name or "python3"

    class StreamingClient(NotebookClient):
        """nbclient's client, passing each cell's printed output on to this process's stdout as it
        comes (the pod log: `kubectl logs`, the Argo UI), framed by the cell it belongs to."""

        shown = None
        caps: dict = {}  # cell index -> what its notebooks keep of its printed output

        def output(self, outs, msg, display_id, cell_index):
            out = super().output(outs, msg, display_id, cell_index)
            if out is not None and out.get("output_type") == "stream":
                text = out.get("text", "")
                try:
                    log.write(text)  # all of it, as it comes
                except (OSError, ValueError):
                    pass
                if echo:
                    if self.shown != cell_index:
                        self.shown = cell_index
                        print(cell_banner(step, nb.cells[cell_index]), flush=True)
                    stream = sys.stdout if out.get("name") == "stdout" else sys.stderr
                    stream.write(text)
                    stream.flush()
                cap = self.caps.setdefault(cell_index, OutputCap(step.run.output_log(step.task)))
                if not cap.keep(out.get("name", "stdout"), text) and outs and outs[-1] is out:
                    outs.pop()  # its notebooks keep the start and the end; output.log all of it
            return out

    client = StreamingClient(
        nb, kernel_name=kernel_name, timeout=None, allow_errors=False, record_timing=True,
        resources={"metadata": {"path": step.cwd}}, shutdown_kernel="immediate",
        # parallel kernels would all write IPython's one sqlite history file
        extra_arguments=["--HistoryManager.enabled=False"],
    )
    # Unix sockets in a private folder instead of TCP ports: kernels started side by side
    # cannot race for a port (jupyter/jupyter_client#154), and nothing listens on the network.
    ipc_dir = tempfile.mkdtemp(prefix="nb2flow-k-")
    client_factory = prompt_kernel_client()

    def new_kernel_manager():
        km = client.create_kernel_manager()
        if os.name == "posix":
            km.transport = "ipc"
            km.ip = os.path.join(ipc_dir, "k")
        use_forking_provisioner(km)
        if client_factory is not None:
            km.client_factory = client_factory
        return km

    import time

    exec_counts: dict = {}
    outcome = ExitStatus.OK
    index = 0
    log = open(step.run.output_log(step.task), "a", encoding="utf-8")
    echo = echoes_output()
    clock = time.perf_counter()
    try:
        try:
            client.km = new_kernel_manager()
            client.start_new_kernel(cwd=step.cwd)
        except NoSuchKernel:
            log.write(f"nb2flow: kernel {kernel_name!r} is not installed here; using python3\n")
            client.kernel_name = "python3"
            client.km = new_kernel_manager()
            client.start_new_kernel(cwd=step.cwd)
        client.start_new_kernel_client()
        step.kernel_pid = kernel_pid(client.km)
        step.timings["kernel"] = time.perf_counter() - clock
        step.status.update(stage="kernel-started", kernel_pid=step.kernel_pid)
        for index, cell in enumerate(nb.cells):
            meta = cell.metadata.get("nb2flow", {})
            role = meta.get("role")
            clock = time.perf_counter()
            if not step.ready_for(role):
                return step.cancelled()
            step.add_time("wait", time.perf_counter() - clock)
            step.status.update(cell=meta.get("cell"), role=role)
            clock = time.perf_counter()
            try:
                client.execute_cell(cell, index)
            finally:
                step.add_time(role, time.perf_counter() - clock)
                if cell.get("execution_count"):
                    exec_counts[cell.execution_count] = meta.get("cell")
                cap = client.caps.pop(index, None)
                if cap is not None:
                    cell.outputs.extend(nbformat.from_dict(o) for o in cap.closing_outputs())
                append_outputs(log, cell, streams=False)
            if role == Role.SAVE:  # values saved: dependents may start while this step winds down
                step.status.finish(StepState.SUCCEEDED, timings=step.rounded_timings())
        if step.status.state is not StepState.SUCCEEDED:
            step.status.finish(StepState.SUCCEEDED, timings=step.rounded_timings())
    except CellExecutionError:
        cell = nb.cells[index]
        meta = cell.metadata.get("nb2flow", {})
        ename, evalue, tb = error_from_outputs(cell)
        step.fail(meta.get("cell"), ename, evalue, user_traceback(tb, exec_counts, meta.get("role")))
        outcome = ExitStatus.FAILED
    except DeadKernelError as exc:
        step.fail(step.status.data.get("cell"), "DeadKernelError", kernel_death_reason(client.km, exc), [],
                  state=StepState.KERNEL_DIED)
        outcome = ExitStatus.KERNEL_DIED
    except KeyboardInterrupt:
        step.status.finish(StepState.INTERRUPTED)
        outcome = ExitStatus.INTERRUPTED
    finally:
        import shutil

        log.close()
        stop_kernel(step, client)
        step.remove_partial_files()
        shutil.rmtree(ipc_dir, ignore_errors=True)
        shutil.rmtree(key_dir, ignore_errors=True)
        try:
            write_atomic(step.run.executed(step.task), nbformat.writes(nb))
        except OSError:
            pass
    return outcome


def stop_kernel(step, client) -> None:
    """Shut the kernel down now, and make sure its whole process group is gone."""
    import signal

    try:
        from jupyter_core.utils import ensure_async, run_sync

        if client.kc is not None:
            client.kc.stop_channels()
        if client.km is not None:
            async def shutdown():
                await ensure_async(client.km.shutdown_kernel(now=True))

            run_sync(shutdown)()
    except Exception:
        pass  # the process group is killed below whatever state the kernel is in
    if step.kernel_pid:
        try:
            os.killpg(step.kernel_pid, signal.SIGKILL)  # the kernel runs in its own session
        except OSError:
            pass
    kill_forked_kernels()  # one interrupted while it started has no pid in the status yet
