"""Starting a step's IPython kernel fast: forked from the pre-imported fork server (local runs).

A kernel started with ``python -m ipykernel_launcher`` spends most of its start-up importing
IPython, ipykernel, zmq and tornado; the fork server has imported them once. The fork goes
through jupyter_client's own seam for this, a kernel provisioner (``KernelManager.provisioner``,
set before the kernel starts, as jupyter_client does on restarts), so no private function is
patched. The forked kernel is set up as a fresh one would be: its own session, environment,
working directory, argv, sys.path, random seeds and event loop. In a pod, and wherever the
kernel is not this interpreter's ipykernel, jupyter_client starts it as usual.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
import types

_FORK_SYS_PATH: list | None = None  # sys.path of a fresh interpreter; set when forking is enabled
_FORKED: list = []  # pids of the kernels this process forked (each leads its own session)


def enable_kernel_forking(sys_path: list) -> None:
    """Fork kernels from this process from now on (the fork server calls this once)."""
    global _FORK_SYS_PATH
    _FORK_SYS_PATH = list(sys_path)


class ForkedKernel:
    """The Popen-like handle jupyter_client's local provisioner keeps, for a forked kernel."""

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


def fresh_random_state() -> None:
    """Reseed what a fresh process seeds from the OS at start-up or import: Python's ``random`` and, when the fork
    server imported it ahead, numpy's global generator (so forked steps never share a random stream)."""
    import random

    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def can_fork_kernel(cmd: list) -> bool:
    """True for this interpreter's ``-m ipykernel_launcher`` once the fork server imported ipykernel."""
    return (_FORK_SYS_PATH is not None and len(cmd) >= 3 and cmd[1:3] == ["-m", "ipykernel_launcher"]
            and os.path.realpath(cmd[0]) == os.path.realpath(sys.executable) and "ipykernel.kernelapp" in sys.modules)


def fork_kernel(cmd: list, env: dict | None, cwd: str | None) -> ForkedKernel:
    """Fork an IPython kernel from this process, set up as ``cmd`` would start it."""
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        # jupyter_client reads the kernel's process group as soon as this returns
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
        _FORKED.append(pid)
        return ForkedKernel(pid)
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
        launcher = sys.modules.get("ipykernel_launcher")
        sys.argv = [getattr(launcher, "__file__", "ipykernel_launcher")] + list(cmd[3:])
        sys.path[:] = list(_FORK_SYS_PATH or sys.path)
        import asyncio

        fresh_random_state()
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop(asyncio.new_event_loop())
        runner = sys.modules.get("__main__")
        if os.path.basename(getattr(runner, "__file__", "") or "") == "nb2flow_step.py":
            # the load and save cells `import nb2flow_step`: the runner this process runs, already compiled
            sys.modules.setdefault("nb2flow_step", runner)
        sys.modules["__main__"] = types.ModuleType("__main__")
        from ipykernel.kernelapp import IPKernelApp

        IPKernelApp.launch_instance(argv=list(cmd[3:]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def use_forking_provisioner(km) -> None:
    """Give kernel manager ``km`` a provisioner that forks the kernel where it can (before it starts)."""
    if _FORK_SYS_PATH is None:
        return
    import uuid

    from jupyter_client.provisioning import LocalProvisioner

    class ForkingProvisioner(LocalProvisioner):
        async def launch_kernel(self, cmd, **kwargs):
            if not can_fork_kernel(cmd):
                return await super().launch_kernel(cmd, **kwargs)
            self.process = fork_kernel(cmd, kwargs.get("env"), kwargs.get("cwd"))
            self.pid = self.pgid = self.process.pid  # the kernel leads its own session
            self.cwd = kwargs.get("cwd") or os.getcwd()
            return self.connection_info

    km.kernel_id = km.kernel_id or str(uuid.uuid4())
    km.provisioner = ForkingProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)


def prompt_kernel_client():
    """jupyter_client's asynchronous kernel client, ready as soon as the kernel is (None: this jupyter_client has
    not the methods it builds on, and its own client is used).

    ``wait_for_ready`` asks for ``kernel_info`` until the reply comes and IOPub carries a message, as jupyter_client
    does, but then waits for that request's ``idle`` status on IOPub instead of for 0.2 s of silence there (IOPub
    is ordered: whatever the kernel published before it has arrived): 0.2 s less for every step's kernel."""
    import asyncio
    from queue import Empty

    try:
        from jupyter_client.asynchronous import AsyncKernelClient
    except ImportError:  # an image's older jupyter_client: its own client and wait
        return None
    if not all(hasattr(AsyncKernelClient, a) for a in ("_async_is_alive", "_handle_kernel_info_reply")):
        return None

    class PromptKernelClient(AsyncKernelClient):
        async def wait_for_ready(self, timeout=None):
            deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
            while True:
                request = self.kernel_info()
                try:
                    reply = await self.shell_channel.get_msg(timeout=1)
                except Empty:
                    reply = None
                if reply is not None and reply["msg_type"] == "kernel_info_reply":
                    iopub_until = time.monotonic() + 0.2
                    while True:
                        left = iopub_until - time.monotonic()
                        try:
                            msg = await self.iopub_channel.get_msg(timeout=max(left, 0.001))
                        except Empty:
                            break  # IOPub not connected yet: ask again, as jupyter_client does
                        if (msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"
                                and msg["parent_header"].get("msg_id") == reply["parent_header"].get("msg_id", request)):
                            self._handle_kernel_info_reply(reply)
                            return
                if not await self._async_is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")
                await asyncio.sleep(0)

    return PromptKernelClient


def kill_forked_kernels() -> None:
    """Kill every kernel this process forked, whatever state its start-up reached."""
    while _FORKED:
        try:
            os.killpg(_FORKED.pop(), signal.SIGKILL)
        except OSError:
            pass


def kernel_pid(km):
    """The kernel process's pid, whichever provisioner started it."""
    provisioner = getattr(km, "provisioner", None)
    for obj in (provisioner, getattr(provisioner, "process", None), getattr(km, "kernel", None)):
        pid = getattr(obj, "pid", None)
        if isinstance(pid, int):
            return pid
    return None
