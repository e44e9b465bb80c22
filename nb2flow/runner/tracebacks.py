"""What a failing step reports: the error, and the part of the traceback inside the user's code."""

from __future__ import annotations

import re
import signal
import traceback

from .protocol import Role

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Terminal commands in text from outside (a notebook, the API server, a pod): CSI sequences (colours, cursor
#: moves) and OSC sequences (ESC ] 52 writes the clipboard, ESC ] 8 makes links), to BEL or ST.
TERMINAL_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x9c]*[\x07\x9c]?")
#: Characters a terminal acts on rather than shows: C0 controls but newline and tab, DEL, C1 controls, and the
#: bidirectional overrides that make text read in another order than it runs.
INVISIBLE_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


SURROGATE_RE = re.compile("[\ud800-\udfff]")


def no_surrogates(text: str) -> str:
    """Text with each lone surrogate (the undecodable bytes of ``os.fsdecode(b'caf\\xe9')``) shown as U+FFFD, as a
    kernel's messages show it: what a step prints or raises is written as UTF-8, never lost."""
    return SURROGATE_RE.sub("\ufffd", text) if isinstance(text, str) else text


def printable(text: str) -> str:
    """``text`` safe to print to a terminal: terminal commands removed, other control characters made visible
    (``\\x1b``, ``\\u202e``); newlines and tabs kept."""
    text = TERMINAL_RE.sub("", str(text))
    return INVISIBLE_RE.sub(lambda m: repr(m.group())[1:-1] if ord(m.group()) > 0xff else f"\\x{ord(m.group()):02x}", text)
CELL_IN_RE = re.compile(r"Cell In\s?\[(\d+)\], line (\d+)")
CELL_FILE_RE = re.compile(r"^<cell (\d+)>$")
# a frame in a library: an installed package, the standard library, or compiled code (a relative .pyx path)
LIBRARY_FRAME_RE = re.compile(r"^\s*File (\S*(site-packages|dist-packages|/lib/python3[.\d]*/)|[^/\s])")


def error_from_outputs(cell) -> tuple:
    """(ename, evalue, traceback lines) of the error output of an executed cell."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), out.get("evalue", ""), [ANSI_RE.sub("", t) for t in out.get("traceback", [])]
    return "Error", "the cell failed", []


def user_traceback(tb: list, exec_counts: dict, role) -> list:
    """The part of an IPython traceback inside the user's code, with ``Cell In[k]`` as ``cell N``."""
    if role in (Role.LOAD, Role.SAVE):
        return []  # nb2flow's own cell: the message says it all
    blocks = [ANSI_RE.sub("", b) for b in tb]
    # a chained exception: the last chain is the one raised in the user's cell (the others are the library's own)
    starts = [i for i, b in enumerate(blocks) if "Traceback (most recent call last)" in b]
    if len(starts) > 1 and any(CELL_IN_RE.search(b) for b in blocks[starts[-1]:]):
        blocks = blocks[starts[-1]:]
    lines = []
    skipped = 0  # frames inside libraries (pandas, numpy, ...), left out
    for block in blocks:
        if LIBRARY_FRAME_RE.match(block):
            skipped += 1
            continue
        for line in block.splitlines():
            if "site-packages/ipykernel" in line or "nb2flow_step.py" in line:
                continue
            lines.append(CELL_IN_RE.sub(lambda m: f"cell {exec_counts.get(int(m.group(1)), '?')}, line {m.group(2)}", line))
    while lines and set(lines[0].strip()) <= {"-"}:
        lines.pop(0)
    if skipped and lines:
        lines.insert(len(lines) - 1, f"({skipped} frame{'s' if skipped > 1 else ''} inside libraries left out)")
    return lines


def script_traceback(exc: BaseException) -> tuple:
    """(original cell number or None, traceback lines) of an exception raised by a step script's cells."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if CELL_FILE_RE.match(f.filename)]
    if not frames:
        return None, []
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    lines = [re.sub(r'File "<cell (\d+)>"', r"cell \1", line).rstrip("\n") for line in lines]
    return int(CELL_FILE_RE.match(frames[-1].filename).group(1)), lines


#: A cell's printed output kept in its notebooks (the executed step notebook, the merged ones): its start and its
#: end; the whole of it is in the step's ``output.log`` (a cell printing 200 MB is not stored five times).
KEEP_HEAD = 4 * 1024 * 1024
KEEP_TAIL = 512 * 1024


def echoes_output() -> bool:
    """Whether a step passes its cells' output on to its own stdout: in a pod (the pod log), not where stdout is a
    file (a local run's ``runner.log``, which ``output.log`` already holds a copy for)."""
    import os
    import stat

    try:
        return not stat.S_ISREG(os.fstat(1).st_mode)
    except OSError:
        return False


class OutputCap:
    """Which of a cell's stream texts its notebooks keep: the first :data:`KEEP_HEAD` characters, then only the last
    :data:`KEEP_TAIL` (a marker says how much was left out, and where all of it is)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.kept = 0
        self.dropped = 0
        self.tail: list = []  # (name, text) of the last characters
        self.tail_size = 0

    def keep(self, name: str, text: str) -> bool:
        """True: keep this text in the notebook; False: it went to the tail (or was left out)."""
        if self.kept + len(text) <= KEEP_HEAD and not self.dropped:
            self.kept += len(text)
            return True
        self.tail.append((name, text))
        self.tail_size += len(text)
        while self.tail and self.tail_size - len(self.tail[0][1]) >= KEEP_TAIL:
            self.tail_size -= len(self.tail[0][1])
            self.dropped += len(self.tail.pop(0)[1])
        if self.tail_size > 2 * KEEP_TAIL:  # one huge text: keep its end only
            name0, text0 = self.tail[0]
            cut = self.tail_size - KEEP_TAIL
            self.tail[0] = (name0, text0[cut:])
            self.tail_size -= cut
            self.dropped += cut
        return False

    def closing_outputs(self) -> list:
        """The outputs that end a cell whose output was cut: the marker, then the last texts."""
        if not self.tail:
            return []
        outs = []
        if self.dropped:
            outs.append({"output_type": "stream", "name": "stderr",
                         "text": f"\n[nb2flow: {self.dropped / 1e6:.1f} MB of this cell's output left out here; all of it is in {self.where}]\n"})
        merged: list = []
        for name, text in self.tail:
            if merged and merged[-1]["name"] == name:
                merged[-1]["text"] += text
            else:
                merged.append({"output_type": "stream", "name": name, "text": text})
        return outs + merged


def append_outputs(log, cell, streams: bool = True) -> None:
    """A cell's streams (unless already written as they came) and error, as text, to the step's output log."""
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            if streams:
                log.write(out.get("text", ""))
        elif kind == "error":
            log.write("\n".join(ANSI_RE.sub("", t) for t in out.get("traceback", [])) + "\n")
    log.flush()


def kernel_death_reason(km, exc) -> str:
    """Why the kernel died, from its process's exit status when there is one."""
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
