"""The warm server's client: find (or start) the user's server for this environment, and open a run's session.

A local run asks the warm server (:mod:`nb2flow.runner.warmserver`) for its fork server instead of
starting one: nbformat, nbclient and ipykernel are imported already, and so are the notebook's set-up
imports when an earlier run of it asked for the same ones. ``NB2FLOW_WARM_SERVER=off`` turns it off
(every run starts its own fork server, as before); a number sets how many idle seconds a server lives
(default 900). ``nb2flow server`` lists the servers, ``nb2flow server stop`` ends them.

A server is named after everything a fresh process would see (:func:`environment_key`): the interpreter
(path, size, mtime), ``sys.path``, the installed distributions there (their ``.dist-info`` names, which
carry the versions, and times) and ``.pth`` files, the environment variables, resource limits, the step
runner's digest and the user's key. Anything else that differs — an edited module of an editable
install, a library's settings file, the notebook's own modules, a ``matplotlibrc`` beside it — is caught
by the server, which checks every file it imported or read while importing before each session, and by
the template key (the folder's own modules' contents).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import time

from .runner.forkserver import process_alive

SWITCH_ENV = "NB2FLOW_WARM_SERVER"
IDLE_DEFAULT = 900.0
START_TIMEOUT = 30.0
#: Variables a shell or Jupyter sets per call or per notebook that no import reads: not part of the key (a session
#: still gets the run's exact environment)
IGNORED_ENV = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "JPY_SESSION_NAME", "NB2FLOW_RUN", "NB2FLOW_KEY", "COLUMNS", "LINES"})
_OFF = {"0", "off", "false", "no"}


class WarmUnavailable(Exception):
    """No warm server for this run (the run starts its own fork server); the message says why."""


def idle_seconds() -> float | None:
    """How long an idle server lives; None when ``NB2FLOW_WARM_SERVER`` turns it off."""
    text = os.environ.get(SWITCH_ENV, "").strip().lower()
    if text in _OFF:
        return None
    if not text or text in {"1", "on", "true", "yes"}:
        return IDLE_DEFAULT
    try:
        value = float(text)
    except ValueError:
        from .errors import UsageError

        raise UsageError(f"{SWITCH_ENV}={text!r}: say off, on, or how many idle seconds the warm server lives") from None
    return value if value > 0 else None


def runtime_dir(create: bool = True) -> str:
    """The user's private folder for the servers' sockets: ``$XDG_RUNTIME_DIR/nb2flow``, else
    ``/tmp/nb2flow-UID``; refused (:class:`WarmUnavailable`) unless it is a real folder of this user, 0700."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "nb2flow") if base and os.path.isabs(base) else os.path.join("/tmp", f"nb2flow-{os.getuid()}")
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise WarmUnavailable(f"cannot make {path}: {exc.strerror or exc}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise WarmUnavailable(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise WarmUnavailable(f"{path} is not a private folder of this user (0700): someone else may have made it")
    return path


def _distributions(entries: list) -> list:
    """What is installed along ``entries``: each folder's distributions, ``.pth`` files (with their text) and eggs,
    with their modification times."""
    out = []
    for entry in entries:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info", ".pth", ".egg-link", ".egg")):
                continue
            full = os.path.join(entry, name)
            try:
                mtime = os.stat(full).st_mtime_ns
            except OSError:
                continue
            text = ""
            if name.endswith(".pth"):
                try:
                    with open(full, "rb") as fh:
                        text = hashlib.sha256(fh.read()).hexdigest()
                except OSError:
                    pass
            out.append([entry, name, mtime, text])
    return out


def environment_key(python: str, digest: str, key: bytes) -> tuple[str, str]:
    """The name of this environment's server: a MAC (under the user's key) of everything a fresh process's imports
    would depend on; and the name of its lineage, the same less what is installed and the step runner (a server
    of the same lineage and another name is one from before an upgrade)."""
    import resource

    exe = os.path.realpath(python)
    st = os.stat(exe)
    limits = [resource.getrlimit(getattr(resource, n)) for n in ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_NOFILE", "RLIMIT_STACK",
                                                                  "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_CPU") if hasattr(resource, n)]
    entries = [os.path.abspath(p) for p in sys.path[1:]]
    parts = {
        "python": [exe, st.st_size, st.st_mtime_ns, sys.version],
        "path": entries,
        "installed": _distributions(entries),
        "env": sorted((k, v) for k, v in os.environ.items() if k not in IGNORED_ENV),
        "limits": limits,
        "runner": digest,
        "uid": os.getuid(),
    }
    name = hmac.new(key, json.dumps(parts).encode(), hashlib.sha256).hexdigest()[:20]
    del parts["installed"], parts["runner"]
    return name, hmac.new(key, json.dumps(parts).encode(), hashlib.sha256).hexdigest()[:16]


def folder_digest(folder: str) -> str:
    """The notebook folder's own modules and a ``matplotlibrc`` there: a template imported beside other ones is not
    reused."""
    h = hashlib.sha256()
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return ""
    for name in names:
        full = os.path.join(folder, name)
        if name.endswith(".py") or name in ("matplotlibrc", ".matplotlibrc"):
            files = [full]
        elif os.path.isfile(os.path.join(full, "__init__.py")):
            files = [os.path.join(full, f) for f in sorted(os.listdir(full)) if f.endswith(".py")]
        else:
            continue
        for path in files:
            try:
                with open(path, "rb") as fh:
                    h.update(path.encode() + b"\0" + hashlib.sha256(fh.read()).digest())
            except OSError:
                continue
    return h.hexdigest()


def _runner_file(folder: str) -> tuple[str, str]:
    """The step runner the servers run, in the private folder (rewritten when another nb2flow wrote another)."""
    from .runner import runner_digest, runner_source
    from .runner.files import make_private_dirs, write_atomic
    from .runner.protocol import RUNNER_FILE

    digest = runner_digest()
    sub = os.path.join(folder, f"runner-{digest[:16]}")
    path = os.path.join(sub, RUNNER_FILE)
    if not os.path.isfile(path):
        make_private_dirs(sub)
        write_atomic(path, runner_source())
        for name in os.listdir(folder):  # another nb2flow's runner: a server reads its runner once, at its start
            if name.startswith("runner-") and name != os.path.basename(sub):
                import shutil

                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    return path, digest


class Session:
    """A run's fork server in the warm server, as :class:`~nb2flow.runner.forkserver.ForkServer` drives a process:
    ``stdin``, ``stdout``, ``pid``, ``poll``, ``wait``."""

    def __init__(self, sock: socket.socket, pid: int, warm: dict, rest: bytes) -> None:
        self.sock = sock
        self.pid = pid
        self.warm = warm
        self.stdin = _Writer(sock)
        self.stdout = _Reader(sock, rest)
        self.returncode = None

    def poll(self):
        if self.returncode is None and not process_alive(self.pid):
            self.returncode = 0
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"session {self.pid}", timeout)
            time.sleep(0.01)
        self.sock.close()
        return self.returncode


class _Writer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """End of input: the session stops, as a fork server does at the end of its stdin."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Reader:
    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self.buffer = rest

    def __iter__(self):
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                yield line + b"\n"
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                return
            self.buffer += chunk


class WarmClient:
    """One run's way to its warm server: started now when there is none (its imports overlap the run's set-up)."""

    def __init__(self, python: str, key: bytes, idle: float) -> None:
        if os.path.realpath(python) != os.path.realpath(sys.executable):
            raise WarmUnavailable(f"steps run with {python}, not nb2flow's interpreter")
        if not os.path.isdir("/proc"):
            raise WarmUnavailable("no /proc to follow the servers' processes")
        self.python, self.key, self.idle = python, key, idle
        self.folder = runtime_dir()
        self.runner, self.digest = _runner_file(self.folder)
        self.name, self.lineage = environment_key(python, self.digest, key)
        self.path = os.path.join(self.folder, f"warm-{self.name}.sock")
        if len(os.fsencode(self.path)) > 107:  # sun_path's size, less its closing NUL
            raise WarmUnavailable(f"the socket's path would be too long for a Unix socket: {self.path}")
        self.started: subprocess.Popen | None = None
        self._retire_previous()
        if not os.path.exists(self.path) and not self._serving():
            self._start()

    def _retire_previous(self) -> None:
        """The server this environment had before its packages (or nb2flow) changed: stopped, it would only hold memory."""
        marker = os.path.join(self.folder, f"last-{self.lineage}")
        try:
            with open(marker, encoding="ascii") as fh:
                previous = fh.read().strip()
        except OSError:
            previous = ""
        if previous == self.name:
            return
        if previous:
            old = os.path.join(self.folder, f"warm-{previous}.sock")
            if os.path.exists(old):
                try:
                    request(old, self.key, {"op": "stop"}, timeout=2.0)
                except (OSError, ConnectionError, ValueError):
                    pass
        from .runner.files import write_atomic

        write_atomic(marker, self.name)

    def _serving(self) -> bool:
        """Whether a server holds this environment's lock (serving, or starting up and not listening yet)."""
        return _server_holds(self.path)

    def _start(self) -> None:
        from .runner.forkserver import RUN_MARK_ENV
        from .runner.auth import KEY_ENV
        from .runner.protocol import WARM_SERVER, runner_argv

        env = {k: v for k, v in os.environ.items() if k != RUN_MARK_ENV}
        env[KEY_ENV] = self.key.hex()
        log = os.open(os.path.join(self.folder, f"warm-{self.name}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.started = subprocess.Popen(runner_argv(self.python, self.runner, self.digest) + [WARM_SERVER, self.path, str(self.idle)],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=self.folder,
                                            env=env, start_new_session=True)
        finally:
            os.close(log)

    def session(self, *, env: dict, cwd: str, modules: list, mode: str) -> Session:
        """Open a run's session (raises :class:`WarmUnavailable` when the server cannot give one)."""
        message = {"op": "session", "env": env, "cwd": cwd, "umask": _umask(), "warm": list(modules), "mode": mode,
                   "folder": folder_digest(cwd) if modules else ""}
        for attempt in range(2):
            sock, first, rest = self._connect(message)
            if "session" in first:
                return Session(sock, int(first["session"]["pid"]), first["session"].get("warm") or {}, rest)
            sock.close()
            if "stale" in first and attempt == 0:  # it retired itself: a fresh one imports what is installed now
                self._start()
                continue
            raise WarmUnavailable(first.get("stale") or "the warm server did not open a session")
        raise WarmUnavailable("the warm server did not open a session")

    def wait_ready(self) -> dict:
        """The server's status once it serves (started now when there was none)."""
        sock, first, _ = self._connect({"op": "status"})
        sock.close()
        return first.get("status") or {}

    def _connect(self, message: dict):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                return _exchange(self.path, self.key, message, keep=True)
            except (FileNotFoundError, ConnectionRefusedError):
                if self.started is not None and self.started.poll() not in (None, 0):
                    raise WarmUnavailable(f"the warm server ended with status {self.started.returncode}; see "
                                          f"{os.path.join(self.folder, f'warm-{self.name}.log')}") from None
                if (self.started is None or self.started.poll() == 0) and not self._serving():
                    self._start()  # gone (idle, stopped), or ours lost a race to one that has ended since
                if time.monotonic() > deadline:
                    raise WarmUnavailable(f"the warm server did not start in {START_TIMEOUT:.0f} s") from None
                time.sleep(0.02)
            except (OSError, ConnectionError, ValueError) as exc:
                raise WarmUnavailable(f"the warm server did not answer: {exc}") from None


_EARLY: dict = {}  # clients made by start_early, each for the one run about to come


def client(python: str, key: bytes, idle: float) -> WarmClient:
    """A run's client of the warm server for ``python``: the one :func:`start_early` made for it, else a new one (never
    one an earlier run used: packages may have been installed since, and the name says what is installed)."""
    return _EARLY.pop((os.path.realpath(python), key, idle), None) or WarmClient(python, key, idle)


def start_early(python: str) -> None:
    """Start the warm server now, when a local run is about to come (its imports then overlap the notebook's
    analysis); any trouble is the run's to report, later."""
    try:
        idle = idle_seconds()
        if idle is not None:
            from .keys import user_key

            key = user_key()
            _EARLY[(os.path.realpath(python), key, idle)] = WarmClient(python, key, idle)
    except Exception:  # noqa: BLE001 - the run itself says why there is no warm server
        pass


def _umask() -> int:
    """This process's umask, read without setting it (another thread may be creating a file right now)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _exchange(path: str, key: bytes, message: dict, *, keep: bool = False, timeout: float = 10.0):
    """Connect, prove both sides hold the user's key, send ``message``; the socket, the first answer and what came
    after it."""
    from .runner.warmserver import check_proof, prove

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    buffer = b""

    def read_line() -> dict:
        nonlocal buffer
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the warm server closed the connection")
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        return json.loads(line)

    try:
        sock.settimeout(timeout)
        sock.connect(path)
        mine = secrets.token_hex(16)
        sock.sendall(json.dumps({"hello": mine}).encode() + b"\n")
        hello = read_line()
        theirs = str(hello.get("nonce", ""))
        if not check_proof(hello.get("proof"), "server", theirs, mine, key):
            raise ConnectionError("the socket's server does not hold this user's key: not nb2flow's warm server")
        sock.sendall(json.dumps(dict(message, proof=prove("client", mine, theirs, key))).encode() + b"\n")
        first = read_line()
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    if not keep:
        sock.close()
    return sock, first, buffer


def request(path: str, key: bytes, message: dict, timeout: float = 5.0) -> dict:
    """One request (``status``, ``stop``) and its answer."""
    _, first, _ = _exchange(path, key, message, timeout=timeout)
    return first


def servers(key: bytes) -> list:
    """(socket path, status or the error) of each server in the user's runtime folder."""
    try:
        folder = runtime_dir(create=False)
    except WarmUnavailable:
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("warm-") and name.endswith(".sock.lock") and not os.path.exists(os.path.join(folder, name[:-5])):
            _remove_if_dead(os.path.join(folder, name[:-5]))  # an ended server's lock and log
        if name.startswith("warm-") and name.endswith(".sock"):
            path = os.path.join(folder, name)
            try:
                out.append((path, request(path, key, {"op": "status"}).get("status") or {}))
            except ConnectionRefusedError:
                _remove_if_dead(path)
            except (OSError, ConnectionError, ValueError) as exc:
                out.append((path, {"error": str(exc)}))
    return out


def _server_holds(sock_path: str) -> bool:
    """Whether a server holds the lock of the socket ``sock_path`` (serving, or starting up)."""
    import fcntl

    try:
        fd = os.open(sock_path + ".lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # (releases the lock if this took it)
    return False


def _remove_if_dead(path: str) -> None:
    """A socket no server listens on (its server was killed), with its lock and log: gone, unless a server holds the
    lock (starting up)."""
    if _server_holds(path):
        return
    for leftover in (path, path + ".lock", path[:-len(".sock")] + ".log"):
        try:
            os.unlink(leftover)
        except OSError:
            pass


def stop_all(key: bytes) -> list:
    """Stop every server of this user; the pids stopped."""
    stopped = []
    for path, status in servers(key):
        if "error" in status:
            continue
        try:
            stopped.append(request(path, key, {"op": "stop"}).get("stopped"))
        except (OSError, ConnectionError, ValueError):
            continue
    return stopped
