"""Golden manifests: the Workflow (and CronWorkflow) each sample notebook exports is checked in under
tests/golden/, so a change to what nb2flow submits shows as a reviewable diff, as Hera does for its examples.

After an intended change: ``NB2FLOW_UPDATE_GOLDEN=1 pytest tests/test_golden.py``, then read the diff.
The only parts normalised are the ones that differ per run by design: the random suffix of the run's
Secret, and nb2flow's version.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import JH_POD_FILE, SAMPLES

import nb2flow
from nb2flow.argo import dump
from nb2flow.cluster import prepare, resolve_target
from nb2flow.config import ClusterConfig

GOLDEN = Path(__file__).parent / "golden"
CASES = [(name, kind) for name in sorted(p.name for p in SAMPLES.glob("*.ipynb")) for kind in ("workflow", "cronworkflow")]


def exported(tmp_path: Path, name: str, kind: str) -> str:
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copy(SAMPLES / name, folder / name)
    pipeline = nb2flow.load(folder / name)
    target = resolve_target(str(folder / name), ClusterConfig(workdir="/home/jovyan/work"), pod_spec=str(JH_POD_FILE))
    schedule = {"name": "nightly-ren-ito", "cron": "0 3 * * *", "timezone": "Europe/Berlin"} if kind == "cronworkflow" else None
    manifest = prepare(pipeline, target, {}, schedule=schedule)[0]
    text = dump(manifest)
    text = re.sub(r"-env-[0-9a-f]{8}\b", "-env-RANDOM", text)
    return text.replace(f"nb2flow.io/version: {nb2flow.__version__}", "nb2flow.io/version: VERSION")


@pytest.mark.parametrize("name, kind", CASES)
def test_exported_manifests_match_the_golden_files(tmp_path, name, kind):
    text = exported(tmp_path, name, kind)
    golden = GOLDEN / f"{Path(name).stem}.{kind}.yaml"
    if os.environ.get("NB2FLOW_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.is_file(), f"no {golden.name}: run NB2FLOW_UPDATE_GOLDEN=1 pytest tests/test_golden.py"
    assert text == golden.read_text(), f"{golden.name} differs: if the change is intended, update it (see the module's docstring)"
