"""Faults: killed steps, a full disk, an unwritable folder, Ctrl-C at start-up, many runs at once.

Each leaves a run record that says what happened, no half-written value, no orphan process,
and `--resume` completes the run afterwards.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nbutil import cell, write
from helpers import assert_gone, nb2flow, only_run_dir, record, step_status, wait_for


def test_step_process_killed_mid_cell_then_resume(tmp_path):
    write(tmp_path / "k.ipynb", cell("import os, time", "setup"), cell("x = 1", "step:a"),
          cell("if not os.path.exists('second-try'):\n    time.sleep(60)\ny = x + 1", "step:b"), cell("z = y", "step:c"))
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "nb2flow", "run", "k.ipynb", "--no-progress"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = wait_for(lambda: next(iter((tmp_path / ".nb2flow" / "runs").glob("*")), None) if (tmp_path / ".nb2flow" / "runs").exists() else None)
    status = wait_for(lambda: (s := step_status(run_dir, "b")).get("state") == "running" and s.get("cell") == 3 and s)
    os.kill(status["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "the step process was killed by signal SIGKILL" in err
    rec = record(run_dir)
    assert {n: s["state"] for n, s in rec["steps"].items()} == {"a": "succeeded", "b": "failed", "c": "skipped"}
    assert_gone(str(run_dir))
    assert not os.path.exists(f"/proc/{status['kernel_pid']}") or "Z" in Path(f"/proc/{status['kernel_pid']}/stat").read_text().split()[2]
    (tmp_path / "second-try").touch()
    r = nb2flow("run", "--resume", run_dir.name, "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {n: s["state"] for n, s in record(run_dir)["steps"].items()} == {"a": "reused", "b": "succeeded", "c": "succeeded"}


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_disk_full_while_saving_a_value_leaves_no_half_file_then_resume(tmp_path):
    write(tmp_path / "d.ipynb", cell("big = bytes(8 * 1024 * 1024)", "step:make"), cell("n = len(big)", "step:use"))
    limited = tmp_path / "python-small-disk"
    limited.write_text(f'#!/bin/sh\nulimit -f 2048\nexec {sys.executable} "$@"\n')  # files of at most 1 MiB
    limited.chmod(0o755)
    r = nb2flow("run", "d.ipynb", "-q", "--python", str(limited), cwd=tmp_path)
    assert r.returncode == 1
    assert "OSError: [Errno 27] File too large" in r.stderr
    run_dir = only_run_dir(tmp_path)
    assert {n: s["state"] for n, s in record(run_dir)["steps"].items()} == {"make": "failed", "use": "skipped"}
    values = run_dir / "values" / "make"
    assert not values.exists() or list(values.iterdir()) == []  # no half-written value a resume could load
    r = nb2flow("run", "--resume", run_dir.name, "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in values.iterdir()) == ["big.pkl", "big.pkl.sig"]


def test_unwritable_run_location_is_one_line(tmp_path):
    write(tmp_path / "w.ipynb", cell("x = 1", "step:a"))
    (tmp_path / ".nb2flow").write_text("not a folder")
    r = nb2flow("run", "w.ipynb", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"nb2flow: {tmp_path}/.nb2flow/runs: cannot create the run folder: Not a directory")


def test_ctrl_c_during_start_up_leaves_no_process(tmp_path):
    write(tmp_path / "s.ipynb", cell("import time", "setup"), cell("time.sleep(30)", "step:a"), cell("x = 1", "step:b", "after:none"))
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "nb2flow", "run", "s.ipynb", "--no-progress"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list((tmp_path / ".nb2flow" / "runs").glob("*/steps/*/status.json")) if (tmp_path / ".nb2flow" / "runs").exists() else None)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run_dir = only_run_dir(tmp_path)
    assert record(run_dir)["state"] == "interrupted"
    assert_gone(str(run_dir))


@pytest.mark.slow
def test_twenty_runs_at_once_all_succeed_with_their_own_records(tmp_path):
    write(tmp_path / "many.ipynb", cell("v = [1]", "step:a"), cell("v.append(2)", "step:b"), cell("w = sum(v)", "step:c"))
    env = dict(os.environ, NO_COLOR="1")
    procs = [subprocess.Popen([sys.executable, "-m", "nb2flow", "run", "many.ipynb", "-q", "-j", "1"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(20)]
    for p in procs:
        p.communicate(timeout=600)
        assert p.returncode == 0
    runs = list((tmp_path / ".nb2flow" / "runs").iterdir())
    assert len(runs) == 20 and len({r.name for r in runs}) == 20
    for r in runs:
        rec = record(r)
        assert rec["state"] == "succeeded" and rec["run_id"] == r.name
        assert not list(r.rglob("*.tmp-*"))


def test_failed_run_leaves_the_notebook_untouched(tmp_path):
    nb = write(tmp_path / "f.ipynb", cell("raise ValueError('x')", "step:a"))
    before = (Path(nb).read_bytes(), os.stat(nb).st_mtime_ns)
    assert nb2flow("run", "f.ipynb", "-q", cwd=tmp_path).returncode == 1
    assert (Path(nb).read_bytes(), os.stat(nb).st_mtime_ns) == before


def test_notebook_credentials_do_not_reach_records_or_logs(tmp_path):
    secret = "f00dfeedf00dfeedf00dfeedf00dfeed"
    write(tmp_path / "c.ipynb", cell("x = 1\nprint('working')", "step:a"), cell("y = x", "step:b"))
    r = nb2flow("run", "c.ipynb", "--no-progress", cwd=tmp_path, env={"JUPYTERHUB_API_TOKEN": secret, "JPY_API_TOKEN": secret, "DB_PASSWORD": secret})
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    for path in only_run_dir(tmp_path).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_symlinks_in_the_run_folder_are_not_followed_out_of_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    write(tmp_path / "l.ipynb", cell("import os", "setup"),
          cell("if not os.path.exists('ok'):\n    raise RuntimeError('first try')\nv = 1", "step:a"), cell("w = v", "step:b"))
    assert nb2flow("run", "l.ipynb", "-q", cwd=tmp_path).returncode == 1
    run_dir = only_run_dir(tmp_path)
    (run_dir / "values").mkdir(exist_ok=True)
    (run_dir / "values" / "a").symlink_to(outside)
    (tmp_path / "ok").touch()
    r = nb2flow("run", "--resume", run_dir.name, "-q", cwd=tmp_path)
    assert r.returncode == 1
    assert "leads out of the run folder" in r.stderr
    assert list(outside.iterdir()) == []


def test_ctrl_c_while_saving_values_leaves_no_half_written_value(tmp_path):
    write(tmp_path / "v.ipynb",
          cell("import time\nclass Slow:\n    def __reduce__(self):\n        open('in-reduce', 'w').close()\n        time.sleep(30)\n        return (Slow, ())", "setup"),
          cell("value = Slow()", "step:make"), cell("n = value", "step:use"))
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "nb2flow", "run", "v.ipynb", "--no-progress"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = wait_for(lambda: next(iter((tmp_path / ".nb2flow" / "runs").glob("*")), None) if (tmp_path / ".nb2flow" / "runs").exists() else None)
    wait_for(lambda: (tmp_path / "in-reduce").exists())  # inside pickle.dump now
    assert [p.name for p in (run_dir / "values" / "make").iterdir()] == [f"value.pkl.tmp-{step_status(run_dir, 'make')['kernel_pid']}"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    rec = record(run_dir)
    assert rec["state"] == "interrupted" and rec["steps"]["make"]["state"] == "interrupted"
    values = run_dir / "values" / "make"
    assert not values.exists() or list(values.iterdir()) == []
    assert_gone(str(run_dir))
