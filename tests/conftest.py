import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hypothesis import settings  # noqa: E402

# The default run is reproducible: the same examples every time (a failure names its example).
# Tests marked `fuzz` set derandomize=False themselves and keep exploring.
settings.register_profile("nb2flow", derandomize=True, database=None, print_blob=True)
settings.load_profile("nb2flow")


# Runs start their own fork server, as they do without a warm server: tests change HOME (the key) and the environment
# all the time, and each would leave a server behind; tests/test_warm.py turns it on. Set for the whole session, so
# that module-scoped fixtures' runs (which no function-scoped monkeypatch reaches) are cold too.
os.environ["NB2FLOW_WARM_SERVER"] = "off"


@pytest.fixture(autouse=True)
def _no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
