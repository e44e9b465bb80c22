"""The warm server: a run served by it behaves as a cold run, never from a stale environment, and only for its user.

Each test has its own runtime folder (``XDG_RUNTIME_DIR``) and home (its own key), and stops its servers at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from helpers import nb2flow, wait_for
from nbutil import cell, write


@pytest.fixture
def warm(tmp_path):
    """The environment of runs that use a warm server of their own (ending after 60 idle seconds)."""
    runtime = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # a Unix socket's path is short: not below pytest's folders
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": runtime, "NB2FLOW_WARM_SERVER": "60"}
    yield env
    nb2flow("server", "stop", cwd=tmp_path, env=env)
    shutil.rmtree(runtime, ignore_errors=True)


def _records(folder: Path) -> list:
    runs = sorted((folder / ".nb2flow" / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(p.read_text()) for p in runs]


def _outputs(record: dict) -> list:
    doc = json.loads(Path(record["output_notebook"]).read_text())
    return ["".join(o.get("text", "")) for c in doc["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def _wheel(folder: Path, name: str, version: str, body: str) -> Path:
    """A pure-Python wheel of a one-module library, as a build backend makes one."""
    files = {f"{name}/__init__.py": body,
             f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: nb2flow-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},{len(text.encode())}"
              for path, text in files.items()] + [f"{name}-{version}.dist-info/RECORD,,"]
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, text in files.items():
            zf.writestr(p, text)
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def _pip_install(wheel: Path, site: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--upgrade", "--target", str(site),
                        str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _library_notebook(tmp_path: Path, name: str = "fakelib") -> Path:
    """A notebook importing an installed library in its set-up cell (installed outside its folder: a module beside the
    notebook is its own, imported by each step)."""
    (tmp_path / "work").mkdir()
    return Path(write(tmp_path / "work" / "lib.ipynb", cell(f"import {name}"),
                 cell(f"v = {name}.VERSION\nprint('version', v)", "step:a"), cell("print('b sees', v)", "step:b")))


def test_a_rerun_is_served_warm_and_an_upgraded_package_is_seen(tmp_path, warm):
    """Run, re-run (served by the server: its set-up imports kept), upgrade the library with pip, run: the new version."""
    site = tmp_path / "site"
    _pip_install(_wheel(tmp_path, "fakelib", "1.0", "VERSION = '1.0'\n"), site)
    env = dict(warm, PYTHONPATH=str(site))
    nb = _library_notebook(tmp_path)
    work = nb.parent
    for _ in range(2):
        r = nb2flow("run", str(nb), "-q", cwd=work, env=env)
        assert r.returncode == 0, r.stderr
    first, second = _records(work)
    assert first["warm_server"]["used"] and second["warm_server"]["used"]
    assert "fakelib" in first["warm_imports"]["modules"] and not first["warm_imports"]["kept"]
    assert second["warm_imports"]["kept"]  # imported by the first run, in the server
    assert _outputs(second) == _outputs(first) == ["version 1.0\n", "b sees 1.0\n"]

    _pip_install(_wheel(tmp_path, "fakelib", "2.0", "VERSION = '2.0'\n"), site)
    r = nb2flow("run", str(nb), "-q", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    third = _records(work)[-1]
    assert _outputs(third) == ["version 2.0\n", "b sees 2.0\n"]
    assert third["warm_server"]["used"] and not third["warm_imports"]["kept"]  # imported afresh, by another server
    assert third["warm_server"]["pid"] != second["warm_server"]["pid"]


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_library_edited_in_place_is_imported_afresh(tmp_path, warm):
    """An editable install's module edited without a new version: the server's check of what it imported retires the
    kept imports."""
    site = tmp_path / "src"
    (site / "editlib").mkdir(parents=True)
    module = site / "editlib" / "__init__.py"
    module.write_text("VERSION = 'before'\n")
    env = dict(warm, PYTHONPATH=str(site))
    nb = _library_notebook(tmp_path, "editlib")
    work = nb.parent
    for _ in range(2):
        assert nb2flow("run", str(nb), "-q", cwd=work, env=env).returncode == 0
    assert _records(work)[-1]["warm_imports"]["kept"]
    module.write_text("VERSION = 'after, same size'\n")
    r = nb2flow("run", str(nb), "-q", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    last = _records(work)[-1]
    assert _outputs(last) == ["version after, same size\n", "b sees after, same size\n"]
    assert not last["warm_imports"]["kept"]


def test_a_warm_run_equals_a_cold_one_and_each_run_gets_its_own_environment(tmp_path, warm):
    nb = write(tmp_path / "env.ipynb", cell("import os"),
               cell("seen = (os.environ.get('COLOR'), os.getcwd(), oct(os.umask(0o022)), 'NB2FLOW_KEY' in os.environ)\n"
                    "print(seen)", "step:a"),
               cell("print(seen == (os.environ.get('COLOR'), os.getcwd(), oct(os.umask(0o022)), False))", "step:b"))
    mask = os.umask(0o027)  # not the usual one: a session takes the run's
    os.umask(mask)
    results = []
    for color, server in (("red", warm), ("blue", warm), ("red", {"HOME": warm["HOME"], "NB2FLOW_WARM_SERVER": "off"})):
        os.umask(0o027)
        try:
            r = nb2flow("run", str(nb), "-q", cwd=tmp_path, env=dict(server, COLOR=color))
        finally:
            os.umask(mask)
        assert r.returncode == 0, r.stderr
        results.append(_records(tmp_path)[-1])
    red, blue, cold = results
    assert red["warm_server"]["used"] and blue["warm_server"]["used"] and "warm_server" not in cold
    assert red["warm_server"]["pid"] != blue["warm_server"]["pid"]  # a session each
    expected = [f"('red', {str(tmp_path)!r}, '0o27', False)\n", "True\n"]
    assert _outputs(red) == _outputs(cold) == expected
    assert _outputs(blue) == [expected[0].replace("red", "blue"), expected[1]]
    listing = nb2flow("server", "--json", cwd=tmp_path, env=warm)
    servers = json.loads(listing.stdout)
    assert len(servers) == 2  # an environment variable is part of what a fresh process sees: a server each


def test_only_the_user_is_served_and_a_planted_server_gets_nothing(tmp_path, warm):
    warm = dict(warm, SECRET_TOKEN="s3cr3t")
    nb = write(tmp_path / "u.ipynb", cell("x = 1", "step:a"), cell("print(x)", "step:b"))
    assert nb2flow("run", str(nb), "-q", cwd=tmp_path, env=warm).returncode == 0
    (sock_path,) = Path(warm["XDG_RUNTIME_DIR"], "nb2flow").glob("warm-*.sock")
    # a neighbour without the user's key: the server says nothing past its own proof, and opens nothing
    from nb2flow.warm import _exchange, request

    with pytest.raises(ConnectionError):
        _exchange(str(sock_path), b"not the key" * 3, {"op": "session", "env": {}, "cwd": "/"})
    with pytest.raises(ConnectionError):
        request(str(sock_path), b"not the key" * 3, {"op": "stop"})
    assert json.loads(nb2flow("server", "--json", cwd=tmp_path, env=warm).stdout)[0]["sessions"] == 1

    # a socket planted where the user's server would be: the run does not talk to it, and runs on its own
    nb2flow("server", "stop", cwd=tmp_path, env=warm)
    wait_for(lambda: not sock_path.exists(), timeout=10)
    planted = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    planted.bind(str(sock_path))
    planted.listen(4)
    heard = []

    def answer():
        conn, _ = planted.accept()
        heard.append(conn.recv(65536))
        conn.sendall(json.dumps({"nonce": "0" * 32, "proof": "f" * 64}).encode() + b"\n")
        heard.append(conn.recv(65536))
        conn.close()

    import threading

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    r = nb2flow("run", str(nb), "-q", cwd=tmp_path, env=warm)
    assert r.returncode == 0, r.stderr
    t.join(10)
    planted.close()
    last = _records(tmp_path)[-1]
    assert last["warm_server"] == {"used": False, "why": "the warm server did not answer: the socket's server does not hold "
                                   "this user's key: not nb2flow's warm server"}
    assert heard[0].startswith(b'{"hello"') and heard[1] == b""  # nothing but a nonce: no environment, no token
    assert _outputs(last) == ["1\n"]


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_runtime_folder_that_is_not_private_is_not_used(tmp_path, warm):
    folder = Path(warm["XDG_RUNTIME_DIR"], "nb2flow")
    folder.mkdir()
    folder.chmod(0o777)
    nb = write(tmp_path / "p.ipynb", cell("print(1)", "step:a"))
    r = nb2flow("run", str(nb), "-q", cwd=tmp_path, env=warm)
    assert r.returncode == 0, r.stderr
    (record,) = _records(tmp_path)
    assert record["warm_server"]["used"] is False and "is not a private folder of this user" in record["warm_server"]["why"]
    assert list(folder.iterdir()) == []


def test_server_commands_and_the_switch(tmp_path, warm):
    r = nb2flow("server", cwd=tmp_path, env=warm)
    assert r.returncode == 0 and r.stderr.startswith("no warm server running"), r.stdout + r.stderr
    r = nb2flow("server", "start", cwd=tmp_path, env=warm)
    assert r.returncode == 0 and r.stdout.startswith("warm server "), r.stdout + r.stderr
    pid = int(r.stdout.split()[2])
    r = nb2flow("server", cwd=tmp_path, env=warm)
    assert f"warm server {pid} ({sys.executable}): up " in r.stdout and "0 run(s) served" in r.stdout, r.stdout
    r = nb2flow("server", "stop", cwd=tmp_path, env=warm)
    assert r.stdout.strip() == "stopped 1 warm server(s)"
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3])
    r = nb2flow("server", "start", cwd=tmp_path, env=dict(warm, NB2FLOW_WARM_SERVER="off"))
    assert r.returncode == 2 and r.stderr.strip() == "nb2flow: NB2FLOW_WARM_SERVER turns the warm server off here"
    nb = write(tmp_path / "s.ipynb", cell("print(1)", "step:a"))
    r = nb2flow("run", str(nb), cwd=tmp_path, env=dict(warm, NB2FLOW_WARM_SERVER="soon"))
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == ("nb2flow: NB2FLOW_WARM_SERVER='soon': say off, on, or how many "
                                                               "idle seconds the warm server lives"), r.stderr
    assert not (tmp_path / ".nb2flow").exists()


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_an_idle_server_ends_and_the_next_run_starts_one(tmp_path, warm):
    env = dict(warm, NB2FLOW_WARM_SERVER="1.5")
    nb = write(tmp_path / "i.ipynb", cell("print(1)", "step:a"))
    assert nb2flow("run", str(nb), "-q", cwd=tmp_path, env=env).returncode == 0
    pid = _records(tmp_path)[-1]["warm_server"]["pid"]
    server = json.loads(nb2flow("server", "--json", cwd=tmp_path, env=env).stdout)[0]["pid"]
    assert server != pid  # the session is the run's, the server is another process
    wait_for(lambda: not json.loads(nb2flow("server", "--json", cwd=tmp_path, env=env).stdout), timeout=20)
    assert nb2flow("run", str(nb), "-q", cwd=tmp_path, env=env).returncode == 0
    assert _records(tmp_path)[-1]["warm_server"]["used"]


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_imports_that_start_threads_are_declined_and_the_run_is_right(tmp_path, warm):
    site = tmp_path / "site"
    (site / "threadlib").mkdir(parents=True)
    (site / "threadlib" / "__init__.py").write_text(
        "import threading, time\nt = threading.Thread(target=time.sleep, args=(3600,), daemon=True, name='poller')\nt.start()\n"
        "def alive():\n    return t.is_alive()\n")
    env = dict(warm, PYTHONPATH=str(site))
    (tmp_path / "work").mkdir()
    nb = Path(write(tmp_path / "work" / "t.ipynb", cell("import threadlib"), cell("print(threadlib.alive())", "step:a")))
    for _ in range(2):
        r = nb2flow("run", str(nb), "-q", cwd=nb.parent, env=env)
        assert r.returncode == 0, r.stderr
    for record in _records(nb.parent):
        assert record["warm_server"]["used"] and record["warm_imports"]["ok"] is False
        assert "started threads (poller)" in record["warm_imports"]["why"]
        assert _outputs(record) == ["True\n"]  # the step imported it itself: its thread is there
    status = nb2flow("server", cwd=tmp_path, env=env).stdout
    assert "declined: threadlib for " in status and "started threads (poller)" in status


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_killed_run_ends_its_steps_in_the_server(tmp_path, warm):
    nb = write(tmp_path / "k.ipynb", cell("import time, os\nprint(os.getpid(), flush=True)\ntime.sleep(120)", "step:a"))
    proc = subprocess.Popen([sys.executable, "-m", "nb2flow", "run", str(nb), "--no-progress"], cwd=tmp_path,
                            env=dict(os.environ, **warm), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        record = wait_for(lambda: next((r for r in _records(tmp_path) if r.get("steps", {}).get("a", {}).get("state") == "running"),
                                       None) if (tmp_path / ".nb2flow" / "runs").is_dir() else None)
        status_file = tmp_path / ".nb2flow" / "runs" / record["run_id"] / "steps" / record["steps"]["a"]["task"] / "status.json"
        kernel = wait_for(lambda: json.loads(status_file.read_text()).get("kernel_pid"))
        session = record["warm_server"]["pid"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # nb2flow only: its steps live in the server's session
        proc.wait(timeout=30)

    def gone(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    wait_for(lambda: gone(kernel) and gone(session), timeout=15)
    time.sleep(0.2)
    assert json.loads(nb2flow("server", "--json", cwd=tmp_path, env=warm).stdout)[0]["sessions"] == 1


def test_what_a_server_imported_is_checked_file_by_file(tmp_path):
    from nb2flow.runner.warmserver import changed_files, loaded_files

    module = tmp_path / "m.py"
    module.write_text("x = 1\n")
    files = {str(module): (module.stat().st_size, module.stat().st_mtime_ns), **loaded_files()}
    assert changed_files(files) == []
    module.write_text("x = 2\n")
    os.utime(module, ns=(files[str(module)][1] + 10**9,) * 2)
    assert changed_files(files) == [str(module)]
    module.unlink()
    assert changed_files(files) == [str(module)]


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_runs_at_once_share_one_import_of_their_set_up(tmp_path, warm):
    """Three runs started together on a new server: the first asks for the set-up imports, the others wait for that one
    import instead of making their own, and all three are right."""
    site = tmp_path / "site"
    (site / "slowlib").mkdir(parents=True)
    (site / "slowlib" / "__init__.py").write_text("import time\ntime.sleep(1.5)\nVALUE = 42\n")
    (tmp_path / "work").mkdir()
    notebooks = [Path(write(tmp_path / "work" / f"n{i}.ipynb", cell("import slowlib"), cell(f"print(slowlib.VALUE + {i})", "step:a")))
                 for i in range(3)]
    env = dict(os.environ, **warm, PYTHONPATH=str(site))
    procs = [subprocess.Popen([sys.executable, "-m", "nb2flow", "run", str(nb), "-q"], cwd=tmp_path / "work", env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for nb in notebooks]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.communicate()[1]
    records = {Path(r["notebook"]).name: r for r in _records(tmp_path / "work")}
    assert [_outputs(records[f"n{i}.ipynb"]) for i in range(3)] == [["42\n"], ["43\n"], ["44\n"]]
    kept = sorted(r["warm_imports"]["kept"] for r in records.values())
    assert kept == [False, True, True]  # one import, made for the first run to ask
    status = json.loads(nb2flow("server", "--json", cwd=tmp_path, env=warm).stdout)
    assert [(t["modules"], t["served"]) for t in status[0]["templates"]] == [(["slowlib"], 3)]


def test_a_settings_file_a_library_reads_at_import_is_read_afresh(tmp_path, warm):
    """A library that reads its settings at import (as matplotlib reads ~/.config/matplotlib/matplotlibrc): edit them
    between two runs and the next run sees the new ones, though the library's own files did not change."""
    site = tmp_path / "site"
    (site / "conflib").mkdir(parents=True)
    (site / "conflib" / "__init__.py").write_text(
        "import os\nwith open(os.path.expanduser('~/.config/conflib/settings')) as fh:\n    COLOR = fh.read().strip()\n")
    settings = tmp_path / ".config" / "conflib" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("red\n")
    env = dict(warm, PYTHONPATH=str(site))
    (tmp_path / "work").mkdir()
    nb = Path(write(tmp_path / "work" / "c.ipynb", cell("import conflib"), cell("print(conflib.COLOR)", "step:a")))
    for _ in range(2):
        assert nb2flow("run", str(nb), "-q", cwd=nb.parent, env=env).returncode == 0
    assert _records(nb.parent)[-1]["warm_imports"]["kept"] and _outputs(_records(nb.parent)[-1]) == ["red\n"]
    settings.write_text("blue\n")
    r = nb2flow("run", str(nb), "-q", cwd=nb.parent, env=env)
    assert r.returncode == 0, r.stderr
    last = _records(nb.parent)[-1]
    assert _outputs(last) == ["blue\n"] and not last["warm_imports"]["kept"]
