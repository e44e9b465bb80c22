"""Every Kubernetes name nb2flow makes is one the API server and Argo accept."""

import re

import pytest

from nb2flow.names import CRON_NAME_MAX, DNS_LABEL_RE, GENERATE_NAME_MAX, LABEL_VALUE_RE, file_slug, k8s_name, label_value
from nb2flow.tags import task_name

AWKWARD = ["My Analysis (v2)", "한글 분석", "analysis", "2024_report", "Ünïcödé-Straße", "---", "a" * 300, "ＦＵＬＬ",
           "x.y.z", "name_with_underscores", "  spaces  ", "😀", "v1.2-final!"]


@pytest.mark.parametrize("text", AWKWARD)
@pytest.mark.parametrize("limit", [63, GENERATE_NAME_MAX, CRON_NAME_MAX])
def test_names_are_dns_1123_labels_within_the_limit(text, limit):
    name = k8s_name(text, max_len=limit, unique=True)
    assert DNS_LABEL_RE.match(name) and len(name) <= limit and re.search("[a-z]", name)


def test_the_examples_a_real_api_server_refused():
    assert k8s_name("My Analysis (v2)") == "my-analysis-v2"
    assert re.fullmatch(r"notebook-[0-9a-f]{6}", k8s_name("한글 분석"))
    assert k8s_name("한글 분석") != k8s_name("다른 노트북")  # no two notebooks on one name


def test_unique_names_never_collide_for_different_texts():
    texts = ["My Analysis", "my-analysis", "my analysis", "My_Analysis", "MY ANALYSIS"]
    names = [k8s_name(t, max_len=CRON_NAME_MAX, unique=True) for t in texts]
    assert len(set(names)) == len(texts)
    assert k8s_name("my-analysis", unique=True) == "my-analysis"  # already valid: kept as it is


def test_task_names_start_with_a_letter():
    assert task_name("1_load") == "step-1-load"
    assert task_name("Train_A") == "train-a"
    assert task_name("123") == "step-123"


@pytest.mark.parametrize("text", AWKWARD + ["dana.lee@example.org", "", "_"])
def test_label_values_and_folder_names(text):
    value = label_value(text)
    assert LABEL_VALUE_RE.match(value) and 0 < len(value) <= 63
    slug = file_slug(text)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", slug) and not slug.startswith(("-", ".")) and "--" not in slug[-8:]
    assert not slug.endswith(("-", "."))


def test_long_names_cut_short_carry_a_hash_and_owners_stay_distinct():
    from nb2flow.cluster import default_schedule_name

    v1 = "quarterly-revenue-forecast-for-the-emea-and-apac-regions-v1"
    v2 = v1[:-1] + "2"
    assert k8s_name(v1, max_len=CRON_NAME_MAX, unique=True) != k8s_name(v2, max_len=CRON_NAME_MAX, unique=True)
    assert k8s_name(v1, max_len=CRON_NAME_MAX) != k8s_name(v2, max_len=CRON_NAME_MAX)  # cut short: hashed even when valid
    names = {default_schedule_name(stem, owner) for stem in (v1, v2)
             for owner in ("ren.ito@example.org", "dana.lee.with.a.very.long.name@example.org",
                           "dana.lee.with.a.very.long.name2@example.org", None)}
    assert len(names) == 8
    for name in names:
        assert DNS_LABEL_RE.match(name) and len(name) <= CRON_NAME_MAX
    assert "-ren-ito-" in default_schedule_name(v1, "ren.ito@example.org")  # the owner is not cut off


def test_two_notebooks_never_share_a_bundle():
    from nb2flow.cluster import bundle_id
    from nbutil import cell, load_cells

    same = [cell("x = 1", "step:a")]
    a = load_cells(*same, path="an analysis with a long name that is cut right at - version one.ipynb")
    b = load_cells(*same, path="an analysis with a long name that is cut right at - version two.ipynb")
    prints = {"a": "0" * 64}
    assert bundle_id(a, prints) != bundle_id(b, prints)
