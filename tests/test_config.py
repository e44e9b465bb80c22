"""Settings files: every key documented, precedence, unknown keys reported with their file."""

from dataclasses import fields

import pytest

from helpers import ROOT
from nb2flow.config import BOOKKEEPING, KEYS, ClusterConfig, load_config
from nb2flow.errors import UsageError


def test_every_setting_is_described_and_in_the_settings_page():
    settable = {f.name for f in fields(ClusterConfig)} - set(BOOKKEEPING)
    assert set(KEYS) == settable
    page = (ROOT / "docs" / "settings.md").read_text()
    for key, meaning in KEYS.items():
        assert f"| `{key}` | {meaning} |" in page


def test_precedence_user_file_then_notebook_folder_then_flags(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("namespace: from-user\npython: python3.11\nargo_ui: https://argo.example.org\n")
    (tmp_path / "nb2flow.yaml").write_text("namespace: from-project\nnamspace: typo\n")
    config = load_config(str(tmp_path / "a.ipynb"), user_file=str(user))
    assert (config.namespace, config.python, config.argo_ui) == ("from-project", "python3.11", "https://argo.example.org")
    assert config.warnings == (f"{tmp_path}/nb2flow.yaml: unknown setting 'namspace' (did you mean namespace?)",)
    assert config.with_flags(namespace="from-flag", context=None).namespace == "from-flag"


@pytest.mark.parametrize("text, message", [
    ("active_deadline: soon\n", "active_deadline: 'soon' is not a duration"),
    ("secret_refs: maybe\n", "secret_refs must be keep or drop"),
    ("rwx_claims: home\n", "rwx_claims must be a list"),
    ("- a\n", "settings must be a YAML mapping, not list"),
    ("a: [1\n", "not valid YAML at line"),
])
def test_bad_settings_are_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "nb2flow.yaml").write_text(text)
    with pytest.raises(UsageError, match=message) as info:
        load_config(str(tmp_path / "a.ipynb"), user_file=str(tmp_path / "none.yaml"))
    assert info.value.render().startswith(f"{tmp_path}/nb2flow.yaml: ")
