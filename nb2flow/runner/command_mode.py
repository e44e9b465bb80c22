"""A command job of a pipeline of several notebooks and scripts: the command run as written, in the job's folder.

Its output (stdout and stderr, as they come) goes to the step's ``output.log`` and on to this process's
stdout (the pod log); its exit status is the step's outcome. ``{name}`` in the command takes the run's
value of that parameter (quoted in shell mode).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .params import from_wire
from .protocol import ExitStatus, Role, StepState
from .tracebacks import echoes_output

#: ``{name}``: a parameter's value in a command (not ``${name}``, a shell variable, nor ``{{``); as nb2flow.workflow
COMMAND_PLACEHOLDER = r"(?<![{$])\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})"
COMMAND_TAIL_LINES = 20  # the last lines of a failed command's output, in its error


def command_argv(command: dict, values: dict) -> list:
    """The words a command step runs: each ``{name}`` of a parameter replaced by its value (in shell mode, quoted)."""
    import json
    import re
    import shlex

    def text(value) -> str:
        return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    def fill(word: str, quote: bool) -> str:
        return re.sub(COMMAND_PLACEHOLDER, lambda m: ((shlex.quote(text(values[m.group(1)])) if quote else text(values[m.group(1)]))
                                                      if m.group(1) in values else m.group(0)), word)

    if command.get("shell"):
        return ["/bin/sh", "-c", fill(command["text"], True)]
    return [fill(word, False) for word in command["argv"]]


def run_command(step) -> int:
    """Wait for go, run the command with the output teed to ``output.log``, and record how it ended."""
    if not step.ready_for(Role.CODE):
        return step.cancelled()
    values = {name: from_wire(value) for name, value in (step.spec.defaults or {}).items()}
    values.update(step.params)
    argv = command_argv(step.spec.command, values)
    shown = argv[2] if step.spec.command.get("shell") else _joined(argv)  # the command as it ran, parameters filled in
    step.status.update(cell=None, role=Role.CODE.value)
    log = open(step.run.output_log(step.task), "a", encoding="utf-8", errors="replace")
    echo = echoes_output()
    tail: list = []
    clock = time.perf_counter()
    try:
        try:
            # a python it runs writes each line as it comes, as in a terminal (the log and the table stay live, and
            # stdout and stderr keep their order)
            env = {**os.environ, "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED") or "1"}
            proc = subprocess.Popen(argv, cwd=step.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env)
        except OSError as exc:
            what = f"cannot run `{shown}`: {exc.strerror or exc}: {argv[0]}"
            step.fail(None, "CommandNotFound" if isinstance(exc, FileNotFoundError) else "CommandFailed", what, [])
            log.write(f"nb2flow: {what}\n")
            return ExitStatus.FAILED
        step.status.update(kernel_pid=None)
        try:
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                for stream in (log, sys.stdout) if echo else (log,):  # the pod log; locally output.log alone
                    try:
                        stream.write(line)
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                tail = (tail + [line.rstrip("\n")])[-COMMAND_TAIL_LINES:]
            code = proc.wait()
        except KeyboardInterrupt:
            _end(proc)
            step.status.finish(StepState.INTERRUPTED)
            return ExitStatus.INTERRUPTED
    finally:
        log.close()
        step.add_time("code", time.perf_counter() - clock)
    if code == 0:
        step.status.finish(StepState.SUCCEEDED, timings=step.rounded_timings())
        return ExitStatus.OK
    how = (f"was killed by signal {signal.Signals(-code).name}" if code < 0 and -code in signal.Signals._value2member_map_
           else f"exited with status {code}")
    step.fail(None, "CommandFailed", f"`{shown}` {how}", tail)
    return ExitStatus.FAILED


def _joined(argv: list) -> str:
    import shlex

    return " ".join(shlex.quote(w) for w in argv)


def _end(proc) -> None:
    """The command, on Ctrl-C or a stop: SIGTERM, then SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        try:
            proc.send_signal(sig)
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except OSError:
            return
