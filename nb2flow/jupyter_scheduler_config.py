"""Where nb2flow's JupyterLab scheduler backend is switched on: one server-config file, as the wheel lays it.

jupyter_server reads ``jupyter_server_config.d/*.json`` in each of its config folders; the wheel installs
``etc/jupyter/jupyter_server_config.d/nb2flow-scheduler.json`` into the environment. An editable install
(``pip install -e .``) lays no data files, and jupyter_server 2's ``jupyter server extension enable`` refuses
a module no config file names yet, so ``nb2flow enable-scheduler`` writes the same file. Light: no jupyter import
beyond jupyter_core's paths.
"""

from __future__ import annotations

import json
import os

FILE_NAME = "nb2flow-scheduler.json"
CONTENT = {"ServerApp": {"jpserver_extensions": {"nb2flow.jupyter_scheduler": True}}}


def config_dir(user: bool = False) -> str:
    """The folder jupyter_server reads ``jupyter_server_config.d`` from: this environment's, or the user's."""
    from jupyter_core.paths import ENV_CONFIG_PATH, jupyter_config_dir

    return jupyter_config_dir() if user else ENV_CONFIG_PATH[0]


def enable(user: bool = False) -> str:
    """Write the config file (the same content as the wheel's); return its path."""
    from .errors import UsageError

    folder = os.path.join(config_dir(user), "jupyter_server_config.d")
    path = os.path.join(folder, FILE_NAME)
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(CONTENT, fh, indent=2)
            fh.write("\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write it: {exc.strerror or exc}",
                         hint="pass --user to write it in your own Jupyter config folder") from None
    return path
