"""Run folders and run records: where a local run keeps its files, and what it says happened.

A run lives in ``<notebook folder>/.nb2flow/runs/<run-id>/``; its record ``run.json`` is
rewritten atomically on every state change, so ``nb2flow status`` and ``list`` can read it
while the run goes on, and a killed run leaves a record that says how far it got.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets

from .errors import UsageError
from .names import file_slug
from .runner.protocol import RunLayout, StepState, notebook_folder, runs_root



def runs_root_for(notebook_path: str) -> str:
    return runs_root(notebook_folder(notebook_path))


def create_run_dir(root: str, stem: str) -> tuple[str, str]:
    """A new, empty run folder ``<root>/<stem>-<time>-<random>``; never shared by two runs."""
    from .runner.files import make_private_dirs

    try:
        make_private_dirs(root)
        private(os.path.dirname(root))  # .nb2flow/, also when an older nb2flow made it with the umask
        for _ in range(20):
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_id = f"{file_slug(stem)}-{stamp}-{secrets.token_hex(3)}"
            path = os.path.join(root, run_id)
            try:
                os.mkdir(path, 0o700)  # atomic: fails if another run took the name
            except FileExistsError:
                continue
            os.chmod(path, 0o700)  # owner-only whatever the umask
            return run_id, path
    except OSError as exc:
        raise UsageError(f"{root}: cannot create the run folder: {exc.strerror or exc}",
                         hint="the notebook's folder must be writable") from None
    raise UsageError(f"{root}: could not create a new run folder")


def private(folder: str) -> None:
    """Make an existing folder of nb2flow's owner-only (best effort: it may be someone else's)."""
    try:
        if os.stat(folder).st_uid == os.getuid():
            os.chmod(folder, 0o700)
    except OSError:
        pass


def read_record(run_dir: str) -> dict:
    with open(RunLayout(run_dir).record, encoding="utf-8") as fh:
        return json.load(fh)


def read_trusted_record(run_dir: str) -> dict:
    """The run's record for acting on it (``--resume``: which notebook, which steps to keep), only when its
    signature checks: a record someone else planted or changed is refused with one line."""
    from .keys import user_key
    from .runner.auth import Untrusted, verified_json

    user_key()
    try:
        return verified_json(RunLayout(run_dir).record)
    except Untrusted as exc:
        raise UsageError(str(exc).removeprefix("nb2flow: "),
                         hint="resume only runs you made; `nb2flow run NOTEBOOK` starts afresh") from None


def write_record(run_dir: str, record: dict) -> None:
    from .keys import user_key
    from .runner import auth
    from .runner.files import write_json

    if auth.current_key() is None:  # e.g. a run interrupted before its step files (and the key) were made
        user_key()
    write_json(RunLayout(run_dir).record, record, sort_keys=False, signed=True)


def reusable_steps(earlier: dict, fingerprints: dict, parents: dict) -> dict:
    """Steps of an earlier run (name -> its record entry) that a resume keeps.

    A step is kept when it succeeded, its fingerprint (its cells, definitions, inputs' fingerprints
    and the parameters) is unchanged, and every parent is kept too; ``parents`` lists names in
    notebook order, so parents come first.
    """
    kept: dict = {}
    old_steps = earlier.get("steps", {})
    for name, print_ in fingerprints.items():
        old = old_steps.get(name)
        if not old or not StepState.parse(old.get("state", "")).ok or old.get("fingerprint") != print_:
            continue
        if all(p in kept for p in parents[name]):
            kept[name] = old
    return kept


def reusable_from_runs(earlier: list, fingerprints: dict, parents: dict) -> dict:
    """For ``--reuse``: step name -> (run folder, record entry) of the newest earlier run (``earlier``: (folder,
    record) pairs, newest first) where the step succeeded with the same fingerprint, its parents reused too."""
    kept: dict = {}
    for name, print_ in fingerprints.items():
        if not all(p in kept for p in parents[name]):
            continue
        for run_dir, record in earlier:
            old = (record.get("steps") or {}).get(name)
            if old and StepState.parse(old.get("state", "")).ok and old.get("fingerprint") == print_:
                kept[name] = (run_dir, old)
                break
    return kept


def copy_step_results(old_dir: str, new_dir: str, task: str) -> None:
    """A step's saved values, executed notebook and output log from an earlier run's folder into a new run's
    (hard links on the same volume, values can be large; else copies)."""
    import shutil

    from .runner.files import make_private_dirs

    old, new = RunLayout(old_dir), RunLayout(new_dir)
    if os.path.isdir(old.values(task)):
        shutil.copytree(old.values(task), new.values(task), copy_function=_link_or_copy, dirs_exist_ok=True)
    make_private_dirs(new.step_dir(task))
    for path in (old.executed(task), old.output_log(task)):
        if os.path.isfile(path):
            _link_or_copy(path, os.path.join(new.step_dir(task), os.path.basename(path)))


def _link_or_copy(src: str, dst: str) -> str:
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def notebook_of(record: dict, run_dir: str) -> str:
    """The run's notebook: as recorded, or beside the run's folder when the record names it by another path
    (an Argo run records the notebook pod's path; this machine may mount that volume elsewhere)."""
    recorded = record.get("notebook") or ""
    if os.path.isfile(recorded):
        return recorded
    return os.path.join(RunLayout(run_dir).notebook_folder, os.path.basename(recorded))


def path_here(path: str | None, record: dict, run_dir: str) -> str | None:
    """A path the record names (a merged notebook), as this machine reaches it: an Argo run records the notebook
    pod's paths, and this machine may mount that volume elsewhere."""
    if not path or os.path.exists(path):
        return path
    pod_folder = os.path.dirname(record.get("notebook") or "")
    folder = os.path.dirname(notebook_of(record, run_dir))
    relative = os.path.relpath(path, pod_folder) if pod_folder else os.path.basename(path)
    return os.path.join(folder, relative) if not relative.startswith("..") else path


def find_run(run_id: str, search: list[str]) -> str:
    """The folder of run ``run_id`` (an id under any of ``search``'s run roots, or a path)."""
    if os.path.isfile(RunLayout(run_id).record):
        return os.path.abspath(run_id)
    if "/" not in run_id and run_id not in (".", ".."):
        for base in search:
            candidate = os.path.join(runs_root(base), run_id)
            if os.path.isfile(RunLayout(candidate).record):
                return os.path.abspath(candidate)
    raise UsageError(
        f"no run {run_id!r} here",
        hint="`nb2flow list` shows recent runs; give the run id from the folder where the notebook is, or the run folder's path",
    )


def list_runs(bases: list[str], limit: int = 20) -> list[dict]:
    """Recent run records under each base folder's ``.nb2flow/runs``, newest first."""
    records = []
    for base in bases:
        root = runs_root(base)
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            try:
                record = read_record(os.path.join(root, name))
            except (OSError, ValueError):
                continue
            record["run_dir"] = os.path.join(root, name)
            records.append(record)
    records.sort(key=lambda r: r.get("started") or 0, reverse=True)
    return records[:limit]


def step_detail(entry: dict) -> str:
    """What a step's row in a run's table says besides its state: its error, the cell it runs, or that it was reused."""
    error = entry.get("error") or {}
    if error:
        return f"{'cell ' + str(error['cell']) + ': ' if error.get('cell') else ''}{error.get('ename')}: {error.get('evalue')}"
    if entry.get("cell") and StepState.parse(entry.get("state", "")) is StepState.RUNNING:
        return f"cell {entry['cell']}"
    if entry.get("reused"):
        return f"reused from {entry['reused_from']}" if entry.get("reused_from") else "reused"
    return ""


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (clock ticks since boot, /proc/PID/stat field 22): with the pid,
    it names one process, never a later one given the same pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_owner() -> dict:
    """Who runs a local run, for its record: this process, on this machine (``stop`` signals it; ``list``
    and ``status`` tell a run whose process is gone — killed, its terminal closed — as abandoned)."""
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname(), "since": _process_start(os.getpid())}


def run_owner_alive(record: dict) -> bool | None:
    """Whether the process that runs a recorded run still does: True, False, or None when that cannot be told
    here (another machine, or a record without its owner)."""
    import socket

    owner = record.get("owner") or {}
    if not owner.get("pid") or owner.get("host") != socket.gethostname():
        return None
    since = _process_start(int(owner["pid"]))
    if since is None:
        return False
    return owner.get("since") is None or since == owner.get("since")


def step_logs(run_dir: str, tasks) -> list[tuple[str, str]]:
    """(task, its ``output.log``: the cells' output, framed by cell) of each of ``tasks`` that has written one."""
    layout = RunLayout(run_dir)
    out = []
    for task in tasks:
        try:
            with open(layout.output_log(task), encoding="utf-8", errors="replace") as fh:
                out.append((task, fh.read()))
        except OSError:
            continue
    return out
