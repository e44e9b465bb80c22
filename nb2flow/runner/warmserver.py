"""The warm server: a step fork server that outlives one run, so a run's first step starts at once.

``nb2flow_step.py --warm-server SOCKET IDLE`` imports what every step imports (nbformat, nbclient,
ipykernel: :func:`forkserver.import_step_libraries`) once, listens on a Unix socket in the user's
private runtime folder and, for each run that connects, forks a **session**: a fork server exactly
as a run starts one (:func:`forkserver._serve_loop` on the connection instead of a pipe), set up
as that run's process would be: its environment, working folder, umask and run mark.

A run whose notebook has set-up imports (numpy, pandas, scikit-learn…) asks for them; the server
keeps a **template** per (modules, mode, folder, the folder's own modules): a child that imported
them once, from which later sessions are forked, so a re-run pays no import. A template whose
imports started threads is declined (a fork copies only one thread) and remembered as declined:
those runs import in each step, as a cold run does.

Never stale: the client names the server after everything a fresh process would see (see
``nb2flow.warm.environment_key``); here, before each session, every file the server and the template
imported — and every file and folder they read while importing: settings, plugin folders, metadata
(:class:`record_reads`) — is checked against its size and modification time then, and a change
retires them.

Only the user: the socket's folder is private (0700, checked by the client), and both sides prove
they hold the user's key before anything else is said (:func:`prove`, :func:`check_proof`).

The protocol, JSON lines: the client says ``{"hello": NONCE}``; the server answers ``{"nonce": NONCE2,
"proof": MAC}``; the client sends ``{"proof": MAC, "op": OP, ...}`` with OP one of ``session``, ``status``,
``stop``. A session's first line is ``{"session": {"pid": PID, "warm": {...}}}``; from then on the
connection speaks the fork server's protocol. It ends after ``IDLE`` seconds without a request, at
``stop``, or when its own files changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import select
import signal
import socket
import sys
import time

from .auth import current_key
from .forkserver import _serve_loop, _stop_children, import_step_libraries, reaped, warm_imports
from .protocol import ExitStatus

SERVER_FDS: list = []  # the server's own descriptors (its lock, listener, templates' channels): no session keeps them
MAX_TEMPLATES = 4  # set-up imports kept at once (each holds its libraries' memory)
HANDSHAKE_TIMEOUT = 5.0


# ---------------------------------------------------------------------------------------------- proofs
def prove(role: str, mine: str, theirs: str, key: bytes | None = None) -> str:
    """The MAC a side sends: its role and both nonces under the user's key."""
    key = key if key is not None else current_key()
    return hmac.new(key or b"", f"nb2flow-warm|{role}|{mine}|{theirs}".encode(), hashlib.sha256).hexdigest()


def check_proof(proof, role: str, mine: str, theirs: str, key: bytes | None = None) -> bool:
    return isinstance(proof, str) and hmac.compare_digest(proof, prove(role, mine, theirs, key))


def read_line(sock: socket.socket, limit: int = 1 << 20) -> dict:
    """One JSON line from ``sock`` (byte by byte: nothing after it is consumed, the session reads on)."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        data += chunk
        if len(data) > limit:
            raise ConnectionError("a line too long")
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ConnectionError("not a JSON object")
    return msg


def send_line(sock: socket.socket, obj: dict) -> None:
    sock.sendall(json.dumps(obj).encode() + b"\n")


# ---------------------------------------------------------------------------------------------- staleness
_READ: set = set()  # files and folders read while recording (see record_reads)
_RECORDING: list = []


def _audit(event: str, args: tuple) -> None:
    if not _RECORDING:
        return
    if event == "open":
        path, mode = args[0], args[1]
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            return  # written, not read
    elif event in ("os.listdir", "os.scandir"):
        path = args[0]
    else:
        return
    if isinstance(path, (str, bytes, os.PathLike)):
        try:
            full = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if not full.startswith(("/proc/", "/sys/", "/dev/")):  # the kernel's own files: their times are now
            _READ.add(full)


class record_reads:
    """While in this block, note every file opened for reading and every folder listed — the settings, plugin folders
    and metadata a library reads at import (a ``matplotlibrc``, entry points), which its module files do not show."""

    def __enter__(self):
        if not getattr(sys, "_nb2flow_audit", False):
            sys.addaudithook(_audit)  # for good (hooks cannot be removed): it does nothing unless recording
            sys._nb2flow_audit = True
        _RECORDING.append(os.getcwd())
        return self

    def __exit__(self, *exc):
        # the working folder, listed by the import system for '' in sys.path: the server's own folder, or the notebook's,
        # whose own modules the template key already covers (its other files change with every run and save)
        _READ.discard(_RECORDING.pop())
        return False


def loaded_files() -> dict:
    """Every file this process imported from, and every file and folder it read while recording, with
    (size, mtime_ns) as they are now."""
    out = {}
    paths = [getattr(m, "__file__", None) for m in list(sys.modules.values())] + sorted(_READ)
    for path in paths:
        if isinstance(path, str) and path not in out:
            try:
                st = os.stat(path)
            except OSError:
                continue
            out[path] = (st.st_size, st.st_mtime_ns)
    return out


def changed_files(files: dict) -> list:
    """The files of ``files`` that changed or went since."""
    changed = []
    for path, (size, mtime) in files.items():
        try:
            st = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            changed.append(path)
    return changed


# ---------------------------------------------------------------------------------------------- sessions
def start_session(conn: socket.socket, request: dict, warm: dict) -> int:
    """Fork the fork server of one run on ``conn``; its pid (it leads its own session)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = ExitStatus.FAILED
    children: set = set()
    try:
        os.setsid()
        _close_server_fds()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

        def on_term(signum, frame):
            _stop_children(children)
            os._exit(ExitStatus.INTERRUPTED)

        signal.signal(signal.SIGTERM, on_term)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(conn.fileno(), 0)
        os.dup2(conn.fileno(), 1)
        os.dup2(devnull, 2)
        conn.close()
        os.umask(int(request.get("umask", 0o022)))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
        os.chdir(request.get("cwd") or "/")
        sys.stdout.write(json.dumps({"session": {"pid": os.getpid(), "warm": warm}}) + "\n")
        sys.stdout.flush()
        code = _serve_loop(b"", children)
    except BaseException:  # the run went away mid-answer (a closed connection): its steps end with it
        _stop_children(children)
    finally:
        os._exit(int(code))


def _close_server_fds() -> None:
    """In a child: the server's lock, listener and channels are the server's, not a run's (a kept lock would
    stop the next server of this environment from starting)."""
    while SERVER_FDS:
        try:
            os.close(SERVER_FDS.pop())
        except OSError:
            pass


def _reap_all() -> None:
    """The server's and a template's ended children (sessions, templates) are reaped: no zombie is left."""
    for _ in reaped():
        pass


# ---------------------------------------------------------------------------------------------- templates
class _Template:
    """A child that imported one set of set-up modules and forks the sessions that want them."""

    def __init__(self, key: str, request: dict) -> None:
        self.key = key
        self.modules = list(request.get("warm") or [])
        self.mode = request.get("mode", "notebook")
        self.cwd = request.get("cwd") or "/"
        self.pending: list = []  # (conn, request) waiting for its imports
        self.result: dict | None = None
        self.files: dict = {}
        self.used = time.time()
        self.served = 0
        ours, theirs = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            ours.close()
            code = 0
            try:
                _close_server_fds()
                code = _template_main(theirs, self.modules, self.mode, self.cwd)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = ExitStatus.FAILED
            finally:
                os._exit(code)
        theirs.close()
        self.channel = ours
        self.buffer = b""
        SERVER_FDS.append(ours.fileno())

    def fileno(self) -> int:
        return self.channel.fileno()

    def send(self, conn: socket.socket, request: dict) -> None:
        """Hand the connection over (its descriptor, over the channel)."""
        self.used = time.time()
        self.served += 1
        socket.send_fds(self.channel, [json.dumps(request).encode() + b"\n"], [conn.fileno()])
        conn.close()

    def retire(self) -> None:
        if self.channel.fileno() in SERVER_FDS:
            SERVER_FDS.remove(self.channel.fileno())
        try:
            self.channel.close()  # end of input: it exits (the sessions it forked run on)
        except OSError:
            pass
        try:
            os.kill(self.pid, signal.SIGTERM)
        except OSError:
            pass


def _template_main(channel: socket.socket, modules: list, mode: str, cwd: str) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(cwd)  # a library reads its settings beside the notebook at import (matplotlib's matplotlibrc)
    with record_reads():
        result = warm_imports(modules, mode)
    if not result["ok"]:
        send_line(channel, {"declined": result})
        return 0
    result["built"] = time.time()
    send_line(channel, {"ready": result, "files": loaded_files()})
    SERVER_FDS.append(channel.fileno())
    buffer, waiting = b"", []
    while True:
        ready, _, _ = select.select([channel], [], [], 1.0)
        _reap_all()
        if not ready:
            continue
        data, fds, _, _ = socket.recv_fds(channel, 1 << 20, 16)
        if not data:
            return 0
        buffer += data
        waiting.extend(fds)
        while b"\n" in buffer and waiting:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            conn = socket.socket(fileno=waiting.pop(0))
            start_session(conn, request, dict(result, kept=bool(request.get("kept"))))
            conn.close()


# ---------------------------------------------------------------------------------------------- the server
def serve_warm(path: str, idle: float) -> int:
    """Listen on ``path`` until ``idle`` seconds pass without a request, a ``stop``, or a change of its files."""
    import fcntl

    lock = open(path + ".lock", "a+")  # noqa: SIM115 - held for the server's life: one server a socket
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    while True:  # a retiring server (stale) lets go of it in a moment; a serving one does not
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > deadline:
                return 0  # another server of this environment serves
            time.sleep(0.05)
    SERVER_FDS.append(lock.fileno())
    started = time.time()
    with record_reads():
        import_step_libraries()
    base_files = loaded_files()
    try:
        os.unlink(path)  # a dead server's socket
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    bound = os.stat(path).st_ino
    listener.listen(16)
    SERVER_FDS.append(listener.fileno())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    templates: dict = {}
    declined: dict = {}
    state = {"started": started, "used": time.time(), "sessions": 0, "python": sys.executable, "pid": os.getpid(), "idle": idle,
             "cwd": os.getcwd()}
    why_end = None
    try:
        while not stopping and why_end is None:
            channels = {t.fileno(): t for t in templates.values()}
            try:
                ready, _, _ = select.select([listener, *channels], [], [], 1.0)
            except InterruptedError:
                continue
            _reap_all()
            if time.time() - state["used"] > idle and not any(t.pending for t in templates.values()):
                why_end = "idle"
            for fd in ready:
                if fd is listener:
                    why_end = _accept(listener, state, templates, declined, base_files, path) or why_end
                elif fd in channels:
                    _from_template(channels[fd], templates, declined)
    finally:
        for t in templates.values():
            t.retire()
        try:
            if os.stat(path).st_ino == bound:  # still this server's (not a newer one's)
                os.unlink(path)
        except OSError:
            pass
        listener.close()
    return 0


def _accept(listener, state: dict, templates: dict, declined: dict, base_files: dict, path: str):
    """One connection: the handshake and its request. Returns why the server ends, or None."""
    conn, _ = listener.accept()
    conn.settimeout(HANDSHAKE_TIMEOUT)
    try:
        hello = read_line(conn)
        mine = secrets.token_hex(16)
        theirs = str(hello.get("hello", ""))
        send_line(conn, {"nonce": mine, "proof": prove("server", mine, theirs)})
        request = read_line(conn)
        if not check_proof(request.get("proof"), "client", theirs, mine):
            conn.close()  # not this user's nb2flow: not a word more
            return None
    except (OSError, ValueError, ConnectionError):
        conn.close()
        return None
    conn.settimeout(None)
    op = request.get("op")
    if op == "stop":
        send_line(conn, {"stopped": os.getpid()})
        conn.close()
        return "stopped"
    if op == "status":
        send_line(conn, {"status": dict(state, templates=[
            {"modules": (t.result or {}).get("modules") or t.modules, "mode": t.mode, "folder": t.cwd, "ready": t.result is not None, "built": (t.result or {}).get("built"),
             "seconds": (t.result or {}).get("seconds"), "served": t.served} for t in templates.values()],
            declined=[{"modules": json.loads(k)[0], "folder": json.loads(k)[2], "why": why["why"]} for k, why in declined.items()])})
        conn.close()
        return None
    if op != "session":
        conn.close()
        return None
    changed = changed_files(base_files)
    if changed:  # what this server imported is not what a fresh process would import now
        send_line(conn, {"stale": f"{changed[0]} changed since the warm server imported it"})
        conn.close()
        return "stale"
    state["sessions"] += 1
    state["used"] = time.time()  # only a run keeps a server alive (not a look at its status)
    modules = list(request.get("warm") or [])
    if not modules:
        start_session(conn, request, {"ok": True, "modules": [], "seconds": 0.0, "kept": True})
        conn.close()
        return None
    key = json.dumps([modules, request.get("mode", "notebook"), request.get("cwd"), request.get("folder")])
    if key in declined:
        start_session(conn, request, dict(declined[key], kept=True))
        conn.close()
        return None
    template = templates.get(key)
    if template is not None and template.result is not None and changed_files(template.files):
        templates.pop(key).retire()  # a library it imported was upgraded or edited: import afresh
        template = None
    if template is None:
        while len(templates) >= MAX_TEMPLATES:
            oldest = min(templates.values(), key=lambda t: t.used)
            templates.pop(oldest.key).retire()
        template = templates[key] = _Template(key, request)
    if template.result is None:
        template.pending.append((conn, request))
    else:
        template.send(conn, dict(request, kept=True))
    return None


def _from_template(template: _Template, templates: dict, declined: dict) -> None:
    """A template's answer: ready (its waiting sessions go to it), declined or gone (they start cold here)."""
    try:
        data = template.channel.recv(1 << 22)
    except OSError:
        data = b""
    template.buffer += data
    if data and b"\n" not in template.buffer:
        return
    msg = None
    if data:
        line, template.buffer = template.buffer.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
    if msg and "ready" in msg:
        template.result = msg["ready"]
        template.files = {p: tuple(v) for p, v in msg.get("files", {}).items()}
        pending, template.pending = template.pending, []
        for i, (conn, request) in enumerate(pending):
            template.send(conn, dict(request, kept=i > 0))  # the first asked for it: its imports are this run's
        return
    templates.pop(template.key, None)
    template.retire()
    why = (msg or {}).get("declined") or {"ok": False, "why": "the warm-up of the set-up imports ended early"}
    if msg and "declined" in msg:
        declined[template.key] = why
    for conn, request in template.pending:
        start_session(conn, request, dict(why, kept=False))
        conn.close()
