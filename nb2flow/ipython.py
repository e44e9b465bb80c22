"""``%load_ext nb2flow``: check, draw, run and schedule the notebook from inside it.

    %nb2flow check                      the findings, each with its cell
    %nb2flow graph [--vars]             the step DAG as a mermaid diagram (JupyterLab >= 4.1 draws it)
    %nb2flow run [-p NAME VALUE ...] [--argo] [--mode script]
    %nb2flow run -f workflow.yaml | -c "python a.py >> b.ipynb"   a pipeline of notebooks and scripts
                                        runs the saved notebook in the background, progress in place
    %nb2flow status [RUN]               a run's steps (default: this notebook's latest run)
    %nb2flow schedule --cron "0 3 * * *" [--timezone TZ] [-p NAME VALUE ...]

The notebook is the kernel's own: ``__session__`` or ``JPY_SESSION_NAME`` (jupyter_server >= 2),
``__vsc_ipynb_file__`` (VS Code), else ``--notebook PATH``. Runs and schedules use the file as saved:
a warning says so when cells ran after its last save. Loading the extension imports nothing heavy;
``run``, ``status`` and ``schedule`` call the ``nb2flow`` command in a subprocess, so the kernel
stays usable while a run goes on.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

USAGE = ("usage: %nb2flow check | graph [--vars] | run [-p NAME VALUE ...] [--argo] | status [RUN] | "
         "schedule --cron CRON [...]   (any of them: --notebook PATH)")
POLL = 0.5


class NotebookNotFound(Exception):
    pass


def find_notebook(user_ns: dict, given: str | None = None) -> str:
    """The notebook this kernel runs: ``given``, else what the front end tells the kernel."""
    if given:
        path = os.path.abspath(os.path.expanduser(given))
        if not os.path.isfile(path):
            raise NotebookNotFound(f"{given}: no such notebook")
        return path
    for path in (user_ns.get("__session__"), os.environ.get("JPY_SESSION_NAME"), user_ns.get("__vsc_ipynb_file__")):
        if path and str(path).endswith(".ipynb"):
            # absolute as jupyter_server >= 2 sets it; a path relative to the server's root is beside the kernel
            for candidate in (os.path.abspath(os.path.expanduser(str(path))), os.path.abspath(os.path.basename(str(path)))):
                if os.path.isfile(candidate):
                    return candidate
    raise NotebookNotFound(
        "which notebook is this? the kernel was not told (JupyterLab with jupyter_server >= 2 sets JPY_SESSION_NAME, "
        "VS Code sets __vsc_ipynb_file__); pass it: %nb2flow check --notebook analysis.ipynb")


def _code(source: str) -> str:
    """A cell's code as compared with the saved file: trailing blanks and line ends do not count."""
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


class Magics:
    """The ``%nb2flow`` line magic of one IPython shell."""

    def __init__(self, shell) -> None:
        self.shell = shell
        self.last_cell_end: float | None = None  # when the last finished cell finished
        self.ran: list[tuple[float, str]] = []  # (when it finished, source) of the cells run in this kernel
        self.runs: list = []  # background runs started from this kernel: (thread, process)

    # ------------------------------------------------------------------ hooks
    def post_run_cell(self, result=None) -> None:
        self.last_cell_end = time.time()
        source = getattr(getattr(result, "info", None), "raw_cell", None)
        if isinstance(source, str):
            self.ran = [r for r in self.ran if r[1] != source][-200:] + [(self.last_cell_end, source)]

    # ------------------------------------------------------------------ the magic
    def __call__(self, line: str):
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return self._error(f"cannot read the arguments: {exc}")
        notebook = None
        if "--notebook" in words:
            i = words.index("--notebook")
            if i + 1 >= len(words):
                return self._error("--notebook needs a path")
            notebook = words[i + 1]
            del words[i:i + 2]
        if not words or words[0] in ("-h", "--help", "help"):
            print(USAGE)
            return None
        command, args = words[0], words[1:]
        handler = getattr(self, f"do_{command}", None)
        if handler is None:
            return self._error(f"unknown command {command!r}; {USAGE}")
        try:
            path = find_notebook(self.shell.user_ns, notebook)
        except NotebookNotFound as exc:
            return self._error(str(exc))
        return handler(path, args)

    def _error(self, text: str) -> None:
        print(f"nb2flow: {text}", file=sys.stderr)

    def _warn_unsaved(self, path: str) -> None:
        """Runs use the file as saved: say so when a cell ran after the last save whose code the saved file does not
        hold (an edit not saved yet) — by content, so `%nb2flow status` or re-running a saved cell warns of nothing."""
        saved_at = os.path.getmtime(path)
        since = [source for when, source in self.ran if when > saved_at]
        if not since:
            return
        from .pipeline import is_nb2flow_magic_cell

        try:
            with open(path, encoding="utf-8") as fh:
                cells = json.load(fh).get("cells") or []
            saved = {_code("".join(c.get("source") or "") if isinstance(c.get("source"), list) else c.get("source") or "")
                     for c in cells if c.get("cell_type") == "code"}
        except (OSError, ValueError, AttributeError):
            saved = set()
        edited = [s for s in since if s.strip() and not is_nb2flow_magic_cell(s) and _code(s) not in saved]
        if edited:
            self._error(f"warning: {os.path.basename(path)} as saved does not have the code of {len(edited)} cell(s) you ran "
                        "since its last save; the run uses the saved file (save with Ctrl+S to include your edits)")

    # ------------------------------------------------------------------ check, graph: in the kernel
    def do_check(self, path: str, args: list):
        from IPython.display import display

        from .api import load
        from .errors import Nb2flowError

        try:
            pipeline = load(path)
        except Nb2flowError as exc:
            return self._error(exc.render())
        name = os.path.basename(path)
        plain = [f.render(name) for f in pipeline.findings]
        steps = len(pipeline.steps)
        summary = f"{name}: {steps} step{'s' if steps != 1 else ''}, " + (
            "no problems" if not pipeline.findings else f"{len(pipeline.errors)} error(s), {len(pipeline.warnings)} warning(s)")
        md = [f"**{summary}**", ""]
        for f in pipeline.findings:
            where = f"cell {f.cell}" if f.cell is not None else "the notebook"
            # JupyterLab and VS Code have no link that selects a cell: the cell number, bold, and its first line
            md.append(f"- {'❌' if f.severity.value == 'error' else '⚠️'} **{where}**"
                      + (f" (step:{f.step})" if f.step else "") + (f" `{f.first_line}`" if f.first_line else "")
                      + f": {f.message}" + (f" — {f.hint}" if f.hint else ""))
        display({"text/plain": "\n".join(plain + [summary]), "text/markdown": "\n".join(md)}, raw=True)
        return None

    def do_graph(self, path: str, args: list):
        from IPython.display import display

        from .api import load
        from .errors import Nb2flowError
        from .graph import render

        unknown = [a for a in args if a != "--vars"]
        if unknown:
            return self._error(f"graph takes --vars only, not {' '.join(unknown)}")
        try:
            pipeline = load(path)
        except Nb2flowError as exc:
            return self._error(exc.render())
        show_vars = "--vars" in args
        mermaid = render(pipeline, "mermaid", show_vars=show_vars)
        text = render(pipeline, "text", show_vars=show_vars)
        display({"text/markdown": f"```mermaid\n{mermaid.rstrip()}\n```\n", "text/plain": text}, raw=True)
        if pipeline.errors:
            self._error(f"{len(pipeline.errors)} problem(s); see %nb2flow check")
        return None

    # ------------------------------------------------------------------ run, status, schedule: the command
    def do_run(self, path: str, args: list):
        """Start ``nb2flow run`` in the background; a table of the steps is updated in place, then a link."""
        import subprocess
        import threading

        from IPython.display import display

        argo = "--argo" in args
        if _runs_a_pipeline_file(args, os.path.dirname(path)):  # -c "a >> b", workflow.yaml, -f workflow.yaml
            cmd = [sys.executable, "-m", "nb2flow", "run", "--events", "json", *args]
        else:
            self._warn_unsaved(path)
            cmd = [sys.executable, "-m", "nb2flow", "run", path, "--events", "json", *args]
        if argo and "--watch" not in args:
            cmd.append("--watch")
        what = os.path.basename(path) if path in cmd else "the pipeline"
        handle = display({"text/plain": f"nb2flow: starting a run of {what}"}, raw=True, display_id=True)
        # its own session: a kernel restart (which ends the kernel's process group) leaves the run going, and the run
        # completes its record with nobody reading its events (`%nb2flow status` then shows it)
        proc = subprocess.Popen(cmd, cwd=os.path.dirname(path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, NO_COLOR="1"), start_new_session=True)
        thread = threading.Thread(target=self._follow, args=(proc, path, handle), name="nb2flow-run", daemon=True)
        thread.start()
        self.runs.append((thread, proc))
        return None

    def _follow(self, proc, path: str, handle) -> None:
        """Read the run's events (``--events json``); show its steps from the run record as they change, and at
        the end the outcome. Nothing here reads nb2flow's human wording."""
        import queue
        import threading

        from .events import read_events

        events: queue.Queue = queue.Queue()

        def pump():
            for ev in read_events(proc.stdout):
                events.put(ev)
            events.put(None)

        threading.Thread(target=pump, daemon=True).start()
        state = FollowState()
        shown = None
        finished = False
        while not finished:
            try:
                while True:
                    ev = events.get(timeout=POLL)
                    if ev is None:
                        finished = True
                        break
                    state.add(ev)
            except queue.Empty:
                pass
            view = progress_view(state, done=finished, code=proc.poll() if finished else None)
            if view != shown:
                handle.update(view, raw=True)
                shown = view
        proc.wait()
        handle.update(progress_view(state, done=True, code=proc.returncode), raw=True)

    def do_status(self, path: str, args: list):
        import subprocess

        run = args or [_latest_run(path) or ""]
        if not run[0]:
            return self._error(f"no runs of {os.path.basename(path)} yet")
        r = subprocess.run([sys.executable, "-m", "nb2flow", "status", *run], cwd=os.path.dirname(path), capture_output=True,
                           text=True, env=dict(os.environ, NO_COLOR="1"))
        print(r.stdout, end="")
        if r.stderr:
            print(r.stderr, end="", file=sys.stderr)
        return None

    def do_schedule(self, path: str, args: list):
        import subprocess

        self._warn_unsaved(path)
        r = subprocess.run([sys.executable, "-m", "nb2flow", "schedule", path, *args], cwd=os.path.dirname(path),
                           capture_output=True, text=True, env=dict(os.environ, NO_COLOR="1"))
        print(r.stdout, end="")
        print(r.stderr, end="", file=sys.stderr)
        return None


class FollowState:
    """What a run's events said so far: its folder, the lines for people, the error that ended it."""

    def __init__(self) -> None:
        self.run_dir: str | None = None
        self.lines: list = []
        self.error: str | None = None
        self.problems: list = []
        self.finished: dict | None = None

    def add(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "run-started" and ev.get("backend") == "local":
            self.run_dir = ev.get("run_dir")
        elif kind == "submitted":
            self.run_dir = ev.get("run_dir") if ev.get("run_dir") and os.path.isdir(ev["run_dir"]) else self.run_dir
            self.lines.append(f"workflow {ev.get('workflow')} submitted in namespace {ev.get('namespace')}")
        elif kind == "message":
            self.lines.append(ev.get("text", ""))
        elif kind == "problem":
            self.problems.append(ev)
        elif kind == "error":
            self.error = ev.get("message")
        elif kind == "run-finished":
            self.finished = ev
            self.run_dir = ev.get("run_dir") or self.run_dir


def _runs_a_pipeline_file(args: list, folder: str) -> bool:
    """Whether ``%nb2flow run ARGS`` runs a pipeline of several notebooks and scripts rather than this notebook:
    ``-c CHAIN``, a workflow file first, or ``-f`` naming a workflow file (one with ``jobs:``, not parameters)."""
    from .workflow import looks_like_workflow_file

    if "-c" in args or "--command" in args or any(a.startswith("--command=") for a in args):
        return True
    if args and args[0].endswith((".yaml", ".yml")) and not args[0].startswith("-"):
        return True
    for flag in ("-f", "--parameters-file"):
        if flag in args and args.index(flag) + 1 < len(args):
            if looks_like_workflow_file(os.path.join(folder, args[args.index(flag) + 1])):
                return True
    return False


def _latest_run(path: str) -> str | None:
    from .runs import list_runs

    runs = [r for r in list_runs([os.path.dirname(path)], limit=100) if r.get("notebook") == path]
    return runs[0]["run_id"] if runs else None


def progress_view(state: FollowState, *, done: bool, code=None) -> dict:
    """What the run's output shows now: each step's state, tries and time from the run record (plain text and
    HTML), and when it is over the outcome with a link to the merged notebook, or the error that ended it."""
    import html
    import json

    record = None
    run_dir = state.run_dir
    if run_dir:
        try:
            with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            record = None
    if record is None:  # no run folder (yet, refused, or an Argo run not reachable here): what nb2flow said
        text = "\n".join(state.lines[-20:] + [f"problem: {p.get('message')} (cell {p.get('cell')})" for p in state.problems])
        if done and state.error:
            text += f"\n{state.error}"
        text = text.strip() or "nb2flow: starting"
        return {"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"}
    from .runner.protocol import RunLayout, StepState
    from .runs import format_duration, step_detail

    rows = []
    for name, s in record.get("steps", {}).items():
        step_state = StepState.parse(s["state"])
        waiting = step_state in (StepState.PENDING,) or not s.get("attempts")
        timed = step_state.finished and step_state not in (StepState.SKIPPED, StepState.REUSED)
        rows.append((name, step_state.label, "-" if waiting else str(s.get("attempts")),
                     format_duration(s.get("duration")) if timed or step_state is StepState.RUNNING else "-", step_detail(s)))
    head = f"run {record['run_id']}: {record['state']}"
    if done and record.get("state") == "running" and record.get("backend", "local") == "local":
        from .runs import run_owner_alive

        if run_owner_alive(record) is False:  # killed (the OOM killer, kill -9): nothing will finish it
            head = (f"run {record['run_id']}: abandoned — the nb2flow process that ran it is gone; "
                    f"`%nb2flow run --resume {record['run_id']}` completes it")
    text = "\n".join([head] + [f"  {r[0]:<16} {r[1]:<12} {r[2]:>3}  {r[3]:>8}  {r[4]}".rstrip() for r in rows])
    table = "".join(f"<tr><td>{html.escape(r[0])}</td><td>{html.escape(r[1])}</td><td>{r[2]}</td><td>{r[3]}</td>"
                    f"<td>{html.escape(r[4])}</td></tr>" for r in rows)
    body = (f"<b>{html.escape(head)}</b><table><tr><th>step</th><th>state</th><th>tries</th><th>time</th><th></th></tr>"
            f"{table}</table>")
    if done:
        merged = record.get("visible_notebook") or record.get("output_notebook")
        if merged:
            rel = os.path.relpath(merged, RunLayout(run_dir).notebook_folder)
            text += f"\nmerged notebook: {rel}"
            body += f'<p>merged notebook: <a href="{html.escape(rel)}" target="_blank">{html.escape(rel)}</a></p>'
        if state.error:
            text += f"\n{state.error}"
            body += f"<pre>{html.escape(state.error)}</pre>"
    return {"text/plain": text, "text/html": body}


def load_ipython_extension(shell) -> None:
    """``%load_ext nb2flow``: registers ``%nb2flow``."""
    magics = Magics(shell)
    shell.register_magic_function(magics, magic_kind="line", magic_name="nb2flow")
    shell.events.register("post_run_cell", magics.post_run_cell)
    shell.user_ns.setdefault("_nb2flow_magics", magics)  # tests and users can wait on background runs
