"""The fork server of local runs, and its client: one pre-imported process that forks each step.

``nb2flow_step.py --serve`` imports nbformat, nbclient and ipykernel once; the executor
(:class:`ForkServer`) asks it for each step, and every step still runs the pod's code path
(:func:`main` with the step command's arguments) in its own session. Only Python's start-up
and those imports are paid once per run; kernels are forked too (see :mod:`.kernels`).

The protocol, JSON lines over the server's stdin and stdout:

* request (client → server): ``{"id": N, "argv": [...], "log": PATH}`` — fork a child that
  runs ``main(argv)`` with stdout and stderr appended to ``PATH``;
* started (server → client): ``{"id": N, "pid": PID}`` — the child's pid (it leads its own session);
* ended (server → client): ``{"pid": PID, "code": C}`` — its exit status (negative: killed by signal -C);
* warm-up (client → server): ``{"warm": [MODULE, ...], "mode": "notebook"|"script"}`` — import the
  set-up cells' modules once, before the steps; answered by ``{"warm": {"ok": true, "modules": [...],
  "seconds": S}}``, or ``{"warm": {"ok": false, "why": ...}}`` when importing them ahead is not safe
  (they started threads), in which case every step imports them itself.

The same loop serves a warm server's session (:mod:`.warmserver`), on a Unix socket instead of pipes.

End of input stops the server; it sends SIGTERM to the sessions of children still running. So does
SIGTERM, which the server also gets when the executor dies (the parent-death signal), so no step
outlives a killed ``nb2flow``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import traceback

from .auth import KEY_ENV
from .kernels import enable_kernel_forking, fresh_random_state
from .protocol import ExitStatus, runner_argv


WARM_DECLINED = 75  # the warm-up child's exit status when its imports started threads: the server goes on cold


def serve() -> int:
    """Run the fork server on stdin/stdout until end of input."""
    import_step_libraries()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor decides what to stop
    children: set = set()

    def on_term(signum, frame):  # the executor is gone (parent-death signal) or stops everything
        _stop_children(children)
        os._exit(ExitStatus.INTERRUPTED)

    signal.signal(signal.SIGTERM, on_term)
    return _serve_loop(b"", children)


def import_step_libraries() -> None:
    """Import what every notebook-mode step imports, and fork kernels from this process from now on."""
    fresh_path = list(sys.path[1:])  # as `python -m ipykernel_launcher` has it
    # nbformat imports jsonschema, which imports rfc3987_syntax when installed (JupyterLab's dependencies bring
    # it) and spends over a second building a grammar for IRI formats nbformat's schema never uses
    blocked = "rfc3987_syntax" not in sys.modules
    if blocked:
        sys.modules["rfc3987_syntax"] = None
    try:  # a failed import only costs speed
        import nbformat  # noqa: F401
        from nbclient import NotebookClient  # noqa: F401
        from jupyter_client.kernelspec import KernelSpecManager  # noqa: F401
        import ipykernel.kernelapp  # noqa: F401  (the kernel itself, forked per step)
        import ipykernel_launcher  # noqa: F401
        import ipykernel.ipkernel  # noqa: F401  (what a kernel imports as it initializes: 0.15 s each otherwise)
        import ipykernel.zmqshell  # noqa: F401
        try:
            import ipykernel.debugger  # noqa: F401  (debugpy)
        except Exception:
            pass
        try:  # work every step repeats, done once for all: nbformat's schema compiled, kernel provisioners found
            nbformat.validate(nbformat.v4.new_notebook())
            from jupyter_client.provisioning import KernelProvisionerFactory

            KernelProvisionerFactory.instance()
        except Exception:
            pass
        enable_kernel_forking(fresh_path)
    except ImportError:
        pass
    finally:
        if blocked:
            del sys.modules["rfc3987_syntax"]  # a notebook that imports it gets it


def _stop_children(children: set) -> None:
    """SIGTERM to each child: a step leads its own session (its kernel in another); a warm-up child does not."""
    for pid in list(children):
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def _say(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def reaped():
    """(pid, exit status) of each child of this process that has ended, without waiting for the others."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _serve_loop(buffer: bytes, children: set) -> int:
    import select

    def reap() -> None:
        if children:
            for pid, code in reaped():
                children.discard(pid)
                _say({"pid": pid, "code": code})

    stdin = sys.stdin.fileno()
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            if "warm" in request:
                served = _warm(request, buffer, children)
                if served is not None:
                    return served  # the warmed-up child served until the end
                continue
            pid = _fork_step(request)
            children.add(pid)
            _say({"id": request["id"], "pid": pid})
        ready, _, _ = select.select([stdin], [], [], 0.01)
        reap()
        if not ready:
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:
            break
        buffer += chunk
    _stop_children(children)
    return 0


def _warm(request: dict, buffer: bytes, children: set):
    """Import the notebook's set-up modules once, for every step (and its kernel) to inherit.

    A child does the imports and, when they started no thread (a fork copies only the forking thread,
    so a library's own threads would be missing in every step), takes over as the server; this
    process waits for it and ends with it. Otherwise the child says why and exits, and this process
    serves on without them. Returns the exit status to end with, or None to go on serving."""
    sys.stdout.flush()
    pid = os.fork()
    if pid:
        children.add(pid)  # until it ends: a SIGTERM to this process reaches it (and it stops its own children)
    if pid == 0:
        code = 0
        children.clear()
        try:
            result = warm_imports(request["warm"], request.get("mode", "notebook"))
            _say({"warm": result})
            code = _serve_loop(buffer, children) if result["ok"] else WARM_DECLINED
        except BaseException:
            traceback.print_exc()
            code = ExitStatus.FAILED
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    children.discard(pid)
    code = os.waitstatus_to_exitcode(status)
    if code == WARM_DECLINED:
        return None
    if code != 0:
        _say({"warm": {"ok": False, "why": f"the warm-up ended with status {code}"}})
        return None if code < 0 else code
    return 0


def warm_imports(modules: list, mode: str) -> dict:
    """Import ``modules`` (the set-up cells' imports) as a step would, and say whether forking stays safe."""
    import importlib
    import importlib.util
    import time

    t0, started = time.perf_counter(), time.time()
    here = os.path.realpath(os.getcwd())
    set_backend = mode == "notebook" and not os.environ.get("MPLBACKEND")
    if set_backend:  # what ipykernel sets before the notebook's code runs (matplotlib reads it at import)
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    done = []
    try:
        for name in modules:
            try:
                spec = importlib.util.find_spec(name.split(".")[0])
            except (ImportError, ValueError):
                continue
            origin = os.path.realpath(getattr(spec, "origin", None) or "") if spec else ""
            if not spec or not origin or origin.startswith(here + os.sep):
                continue  # not installed, or the notebook's own module: each step imports it fresh
            try:
                importlib.import_module(name)
                done.append(name)
            except Exception:  # `from x import function` names no module; a broken import is the step's to report
                continue
    finally:
        if set_backend:
            os.environ.pop("MPLBACKEND", None)
    seconds = round(time.perf_counter() - t0, 3)
    if threading.active_count() > 1:
        names = ", ".join(sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()))
        return {"ok": False, "why": f"importing them started threads ({names}); each step imports them itself",
                "started": started, "seconds": seconds}
    return {"ok": True, "modules": done, "started": started, "seconds": seconds}


def _fork_step(request: dict) -> int:
    """Fork a child that runs one step; return its pid."""
    from .step import main

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = ExitStatus.FAILED
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        fresh_random_state()  # a script-mode step runs its cells in this process
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else ExitStatus.FAILED
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(int(code))


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child, before it runs: ``signum`` when the process that started it dies, however it dies (Linux's
    parent-death signal); elsewhere nothing."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signum))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):
        pass


RUN_MARK_ENV = "NB2FLOW_RUN"


def marked_processes(mark: str) -> list[int]:
    """The processes (of this user: others' environments cannot be read) whose environment carries the run's mark:
    its steps, their kernels, and whatever those started, a child that left the step's session (setsid) too."""
    needle = f"{RUN_MARK_ENV}={mark}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read() + b"\0":
                    found.append(int(entry))
        except OSError:
            continue
    return found


def end_marked(mark: str, grace: float = 3.0) -> list[int]:
    """At a run's end, end every process still carrying its mark (SIGTERM, then SIGKILL after ``grace``)."""
    import time

    left = marked_processes(mark) if os.path.isdir("/proc") else []
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if process_alive(pid)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie is already gone), by /proc: also for a process that is not a child."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


class ForkServer:
    """The executor's side: starts ``RUNNER --serve`` and asks it for steps — or, given ``session``, asks a warm
    server (:mod:`nb2flow.warm`) for a fork server already set up, and starts its own only when that fails."""

    def __init__(self, python: str, runner: str, cwd: str, *, digest: str | None = None, key: bytes | None = None,
                 mark: str | None = None, session=None) -> None:
        """``digest``: the runner file's SHA-256, checked before it runs; ``key``: the user's key, handed over in
        the environment (the server takes it out at once, see :mod:`auth`); ``mark``: a value of ``NB2FLOW_RUN``
        that every process of the run inherits, so that the run's end finds each one (see :func:`end_marked`);
        ``session``: ``session(env, modules, mode)`` opens a warm server's session (a process-like object with
        ``warm``, what its set-up imports did) or raises with why not."""
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        if mark is not None:
            self.env[RUN_MARK_ENV] = mark
        self._cold = (python, runner, cwd, digest, key)
        self._session = session
        self.proc = None
        self.warm_server: dict | None = None  # how the warm server served this run (None: it did not)
        self._cond = threading.Condition()
        self._pids: dict = {}
        self._exits: dict = {}
        self.warmed: dict | None = None  # the warm-up's answer
        self._next = 0
        if session is None:
            self._start_cold()

    def _start_cold(self) -> None:
        python, runner, cwd, digest, key = self._cold
        env = dict(self.env)
        if key is not None:
            env[KEY_ENV] = key.hex()
        self.proc = subprocess.Popen(runner_argv(python, runner, digest) + ["--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
                                     env=env, preexec_fn=die_with_parent)
        self._start_reader()

    def _start_reader(self) -> None:
        try:
            self._reader = threading.Thread(target=self._read, name="nb2flow-fork-server", daemon=True)
            self._reader.start()
        except BaseException:  # e.g. Ctrl-C right now: never leave the server behind
            self._kill()
            raise

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                if "warm" in msg:
                    self.warmed = msg["warm"]
                elif "id" in msg:
                    self._pids[msg["id"]] = msg["pid"]
                else:
                    self._exits[msg["pid"]] = msg["code"]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def warm(self, modules: list, mode: str) -> None:
        """Ask the server to import the set-up cells' modules before the steps it forks next (a warm server's
        session is forked from a process that imported them, when an earlier run asked for the same)."""
        if self.proc is None and self._session is not None:
            try:
                self.proc = self._session(self.env, list(modules), mode)
            except Exception as exc:  # noqa: BLE001 - any failure of the warm server: this run starts its own
                self.warm_server = {"used": False, "why": str(exc)}
            else:
                self.warm_server = {"used": True, "pid": self.proc.pid}
                self.warmed = self.proc.warm if modules else None
                self._start_reader()
                return
        if self.proc is None:
            self._start_cold()
        if modules:
            self._send({"warm": list(modules), "mode": mode})

    def _send(self, request: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RuntimeError("the step fork server stopped") from None

    def spawn(self, argv: list, log: str) -> int:
        """Start one step (``argv``: the step command after the runner's path); its pid."""
        if self.proc is None:
            self.warm([], "notebook")
        with self._cond:
            self._next += 1
            ident = self._next
        self._send({"id": ident, "argv": argv, "log": log})
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._pids or self.proc.poll() is not None, timeout=60):
                raise RuntimeError("the step fork server did not answer")
            if ident not in self._pids:
                raise RuntimeError("the step fork server stopped")
            return self._pids[ident]

    def exit_code(self, pid: int):
        """The step's exit status once it ended, else None."""
        if self.proc is None:
            return None
        with self._cond:
            if pid in self._exits:
                return self._exits[pid]
            if self.proc.poll() is not None and not self._reader.is_alive():
                return -signal.SIGKILL  # the server died; its children are gone with it
            return None

    def wait(self, pid: int, timeout: float):
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self.proc.poll() is not None, timeout=timeout)
        return self.exit_code(pid)

    def close(self) -> None:
        """End of input: the server stops (at once, or after the imports it is still doing)."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except BaseException:  # too slow, or Ctrl-C while waiting
            self._kill()
            raise

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server leads its own session
        except OSError:
            pass
        self.proc.wait()
