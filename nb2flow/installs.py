"""Install lines in set-up cells: run once per local run, before the steps, instead of once per step.

A set-up cell runs in every step; a ``%pip install`` in it would run pip once per step. The lines
that only install packages — ``%pip install``, ``!pip install``, ``pip install`` (automagic),
``!python -m pip install``, ``!{sys.executable} -m pip install``, ``%conda``/``%mamba install`` —
are taken out of the step files of a local run (a comment keeps the line numbers) and run once,
with the step's interpreter, as IPython's ``%pip`` would run them. A line that expands a variable
(``{pkg}``, ``$pkg``) or does anything else stays in the cell. On Argo every pod starts from the
image, so install lines stay in the step files and run in every pod.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# IPython's %pip and %conda (IPython/core/magics/packaging.py): `python -m pip ARGS`; `conda install --yes --prefix P ARGS`
PIP_RE = re.compile(r"^\s*(?:%pip|!\s*pip3?|pip|!\s*python3?\s+-m\s+pip|!\s*\{sys\.executable\}\s+-m\s+pip)\s+install\s+(?P<args>.*)$")
CONDA_RE = re.compile(r"^\s*(?:%|!\s*)(?P<tool>conda|mamba|micromamba)\s+install\s+(?P<args>.*)$")
EXPANDS_RE = re.compile(r"[{}$`]|\$\(")
MARK = "# nb2flow: installed once, before the steps: "


@dataclass(frozen=True)
class Install:
    cell: int  # the original cell number
    line: str  # as written in the cell
    tool: str  # pip, conda, mamba, micromamba
    args: tuple  # what follows `install`

    def command(self, python: str) -> list:
        """The command, as IPython's magic runs it with this interpreter."""
        if self.tool == "pip":
            return [python, "-m", "pip", "install", *self.args]
        import os

        prefix = os.path.dirname(os.path.dirname(python))  # the environment the interpreter belongs to
        return [self.tool, "install", "--yes", "--prefix", prefix, *self.args]


def install_of(line: str, cell: int) -> Install | None:
    """The install a line makes, when it only installs packages with fixed arguments."""
    text = line.split("#", 1)[0].rstrip() if "#" in line and not line.lstrip().startswith("#") else line.rstrip()
    m = PIP_RE.match(text) or CONDA_RE.match(text)
    if not m or EXPANDS_RE.search(m.group("args")):
        return None
    try:
        lexer = shlex.shlex(m.group("args"), posix=True, punctuation_chars=True)
        if any(token and set(token) <= set("();<>|&") for token in lexer):
            return None  # a shell operator outside quotes: more than an install
        args = tuple(shlex.split(m.group("args")))
    except ValueError:
        return None
    if not args:
        return None
    tool = m.groupdict().get("tool") or "pip"
    return Install(cell, line.strip(), tool, args)


def split_installs(source: str, cell: int) -> tuple[list, str]:
    """(installs, the cell without them); each install line becomes a comment, so line numbers stay."""
    installs, lines = [], []
    one_line = len([x for x in source.split("\n") if x.strip()]) == 1  # IPython's automagic: `pip install x` alone
    for line in source.split("\n"):
        found = install_of(line, cell)
        if found and not one_line and not line.lstrip().startswith(("%", "!")):
            found = None
        if found:
            installs.append(found)
            lines.append(MARK + line.strip())
        else:
            lines.append(line)
    return installs, "\n".join(lines)


QUIET_FLAGS = frozenset({"-q", "-qq", "-qqq", "--quiet", "--user", "--no-cache-dir", "--disable-pip-version-check", "--no-warn-script-location"})

#: Run with the step's interpreter: prints what is installed when every requirement is already satisfied, else
#: nothing (pip itself then runs). What pip concludes too ("Requirement already satisfied"), in 50 ms instead of 2 s.
#: Whether requirements are met already, as pip would conclude: the function, run in the steps' interpreter by
#: :data:`SATISFIED_CHECK` (or here, when that is this interpreter)
SATISFIED_FUNCTION = """
def satisfied(texts):
    import re
    from importlib.metadata import version
    found = []
    if all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", t) for t in texts):  # bare names: no parser needed
        for name in texts:
            try:
                found.append(f"{name} {version(name)}")
            except Exception:
                return None
        return "Requirement already satisfied: " + ", ".join(found)
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return None
    for text in texts:
        try:
            req = Requirement(text)
            have = version(req.name)
        except Exception:
            return None
        if req.url or req.extras or (req.marker and not req.marker.evaluate()) or not req.specifier.contains(have, prereleases=True):
            return None
        found.append(f"{req.name} {have}")
    return "Requirement already satisfied: " + ", ".join(found)
"""
SATISFIED_CHECK = SATISFIED_FUNCTION + """
import sys
line = satisfied(sys.argv[1:])
if line:
    print(line)
"""
exec(SATISFIED_FUNCTION)  # noqa: S102 - defines satisfied() here too, from the one text


def checkable_requirements(install: Install) -> list | None:
    """The requirements of a pip install whose outcome a metadata check can tell (None: run pip): plain
    requirement specifiers, and only flags that change nothing when they are all satisfied."""
    if install.tool != "pip":
        return None
    reqs = [a for a in install.args if not a.startswith("-")]
    flags = [a for a in install.args if a.startswith("-")]
    if not reqs or any(f not in QUIET_FLAGS for f in flags):
        return None
    return reqs
