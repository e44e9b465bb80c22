"""Argo manifests, validated against Argo v4.1.2's JSON schema and full CRDs from ../shared."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from admission import strict
from helpers import JH_HOME_VOLUME, JH_NODE, JH_POD_FILE, JH_TOKEN, SAMPLES, SHARED, jupyterhub_pod
from nbutil import cell, write

import nb2flow
from nb2flow.argo import argo_json, dump
from nb2flow.cluster import prepare, resolve_target
from nb2flow.config import ClusterConfig
from nb2flow.errors import Nb2flowError

FIXTURE = JH_POD_FILE
TOKEN = JH_TOKEN


# ------------------------------------------------------------------ validators


@pytest.fixture(scope="module")
def validators():
    """Argo v4.1.2's JSON schema and full CRDs (strict), or None where ../shared is absent."""
    if not SHARED.is_dir():
        return None
    import jsonschema

    schema = json.loads((SHARED / "schemas" / "argo-workflows.schema.json").read_text())
    out = {}
    for kind in ("Workflow", "CronWorkflow"):
        s = {"$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}", "definitions": schema["definitions"]}
        crd = yaml.load((SHARED / "schemas" / f"argoproj.io_{kind.lower()}s.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        crd_schema = strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        out[kind] = (jsonschema.Draft7Validator(s), jsonschema.Draft4Validator(crd_schema))
    return out


def validate(validators, manifest: dict) -> None:
    """The manifest passes Argo's own validation rules (argo_rules.py), and Argo's schema and CRD where
    ../shared is here (the test's own checks run anyway)."""
    from argo_rules import workflow_problems

    assert workflow_problems(manifest) == []
    if validators is None:
        return
    json_v, crd_v = validators[manifest["kind"]]
    errors = [f"schema: {'/'.join(map(str, e.path))}: {e.message}" for e in json_v.iter_errors(manifest)]
    errors += [f"crd: {'/'.join(map(str, e.path))}: {e.message}" for e in crd_v.iter_errors(manifest)]
    assert not errors, errors[:5]


def test_validator_accepts_argos_examples_and_rejects_broken_ones(validators):
    if validators is None:
        pytest.skip(f"../shared is absent (looked for {SHARED}); it holds Argo's schemas, CRDs and examples")
    examples = sorted((SHARED / "schemas" / "argo-examples").glob("*.yaml"))
    assert examples
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in validators:
                # Argo's examples use integers where the JSON schema types int-or-string as string;
                # the full CRD accepts both, so that is the check that applies to them as written
                crd_errors = list(validators[doc["kind"]][1].iter_errors(doc))
                assert not crd_errors, (path.name, crd_errors[0].message)
    broken = yaml.safe_load((SHARED / "schemas" / "argo-examples" / "dag-diamond.yaml").read_text())
    broken["spec"]["templates"][0]["dag"]["tasks"][0]["dependencies"] = "A"  # must be a list
    assert list(validators["Workflow"][1].iter_errors(broken))
    broken = yaml.safe_load((SHARED / "schemas" / "argo-examples" / "dag-diamond.yaml").read_text())
    broken["spec"]["entrypointt"] = "x"  # unknown field
    assert list(validators["Workflow"][1].iter_errors(broken))


# ------------------------------------------------------------------ building manifests


def pod_file(tmp_path, mutate=None) -> str:
    pod = json.loads(FIXTURE.read_text())
    if mutate:
        mutate(pod)
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(pod))
    return str(path)


def manifest_for(notebook, pod_json, *, params=None, schedule=None, run=None, **config):
    config.setdefault("workdir", "/home/jovyan/work")
    pipeline = nb2flow.load(notebook)
    target = resolve_target(str(notebook), ClusterConfig(**config), pod_spec=pod_json)
    manifest, bundle = prepare(pipeline, target, params or {}, schedule=schedule, **(run or {}))
    return pipeline, target, manifest


@pytest.fixture
def analysis(tmp_path):
    nb = tmp_path / "analysis.ipynb"
    nb.write_bytes((SAMPLES / "analysis.ipynb").read_bytes())
    return nb


def test_fixture_manifest_is_valid_and_copies_what_a_step_needs(validators, analysis, tmp_path):
    pipeline, target, m = manifest_for(analysis, pod_file(tmp_path))
    validate(validators, m)
    spec = m["spec"]
    assert m["metadata"]["generateName"] == "analysis-"
    assert m["metadata"]["namespace"] == "jhub"
    labels = m["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/managed-by": "nb2flow", "nb2flow.io/notebook": "analysis",
                      "nb2flow.io/owner": JH_HOME_VOLUME.replace("volume-", "")}
    assert spec["podMetadata"]["labels"] == labels
    step = next(t for t in spec["templates"] if t["name"] == "step")["container"]
    digest = jupyterhub_pod()["status"]["containerStatuses"][0]["imageID"].split("@")[1]
    assert step["image"] == f"quay.io/jupyterhub/k8s-singleuser-sample@{digest}"  # pinned by digest
    assert step["imagePullPolicy"] == "IfNotPresent"
    assert step["workingDir"] == "/home/jovyan/work"
    assert step["securityContext"] == {"allowPrivilegeEscalation": False, "runAsUser": 1000}
    assert step["resources"] == {"requests": {"cpu": "500m", "memory": "1073741824"}, "limits": {"cpu": "2", "memory": "4294967296"}}
    assert [v["mountPath"] for v in step["volumeMounts"]] == ["/dev/shm", "/mnt/datasets", "/home/jovyan"]
    assert [v["name"] for v in spec["volumes"]] == ["dshm", "shared-datasets", JH_HOME_VOLUME]
    assert spec["serviceAccountName"] == "notebook-workflows"
    assert spec["securityContext"] == {"fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch"}  # no chown of the home volume per pod
    assert spec["nodeSelector"] == {"node.kubernetes.io/instance-type": "m6i.2xlarge"}
    assert len(spec["tolerations"]) == 4
    assert "initContainers" not in json.dumps(m)
    # the RWO home volume pins steps to the notebook's node, keeping the chart's preferred affinity
    aff = spec["affinity"]["nodeAffinity"]
    assert aff["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [JH_NODE]}]}]
    assert aff["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any("ReadWriteOnce" in w for w in target.pod.warnings)
    assert spec["activeDeadlineSeconds"] == 86400 and spec["ttlStrategy"] == {"secondsAfterCompletion": 604800}
    assert spec["podGC"] == {"strategy": "OnPodSuccess"}


def test_dag_dependencies_are_exactly_the_pipeline_edges(validators, analysis, tmp_path):
    pipeline, _, m = manifest_for(analysis, pod_file(tmp_path))
    tasks = m["spec"]["templates"][0]["dag"]["tasks"]
    assert {(d, t["name"]) for t in tasks for d in t.get("dependencies", [])} == {(pipeline.step(a).task, pipeline.step(b).task) for a, b in pipeline.edges}
    assert [t["name"] for t in tasks] == [s.task for s in pipeline.steps]


def test_no_credential_reaches_the_manifest(validators, analysis, tmp_path):
    text = json.dumps(manifest_for(analysis, pod_file(tmp_path))[2])
    fixture = json.loads(FIXTURE.read_text())
    assert TOKEN not in text
    assert "JUPYTERHUB_" not in text and "JPY_" not in text
    assert "kube-api-access" not in text and "/var/run/secrets/kubernetes.io/serviceaccount" not in text
    for env in fixture["spec"]["containers"][0]["env"]:
        if env["name"].startswith(("JUPYTERHUB_", "JPY_")) and env.get("value") and len(env["value"]) > 8:
            assert env["value"] not in text or env["value"] in ("http://hub:8081/hub/api",)
    # secretKeyRef references carry no secret and are kept (configurable)
    assert "analytics-s3-credentials" in text
    dropped = manifest_for(analysis, pod_file(tmp_path), secret_refs="drop")[2]
    assert "team-s3-credentials" not in json.dumps(dropped)


def test_other_credentials_go_through_the_runs_secret_and_custom_token_mounts_are_dropped(validators, analysis, tmp_path):
    def mutate(pod):
        c = pod["spec"]["containers"][0]
        c["env"] += [{"name": n, "value": f"value-of-{n}"} for n in ("OPENAI_API_KEY", "DB_PASSWORD", "AWS_SESSION_TOKEN", "GITHUB_PAT", "MY_CREDENTIALS", "SAFE_SETTING")]
        pod["spec"]["volumes"].append({"name": "custom-token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}})
        pod["spec"]["volumes"].append({"name": "ssh-keys", "secret": {"secretName": "ssh"}})
        c["volumeMounts"] += [{"name": "custom-token", "mountPath": "/opt/tokens"}, {"name": "ssh-keys", "mountPath": "/home/jovyan/.ssh"}]

    _, target, m = manifest_for(analysis, pod_file(tmp_path, mutate))
    validate(validators, m)
    text = json.dumps(m)
    secret = m["metadata"]["annotations"]["nb2flow.io/env-secret"]
    env = {e["name"]: e for e in m["spec"]["templates"][1]["container"]["env"]}
    for n in ("OPENAI_API_KEY", "DB_PASSWORD", "AWS_SESSION_TOKEN", "GITHUB_PAT", "MY_CREDENTIALS"):
        assert f"value-of-{n}" not in text
        assert env[n] == {"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": n}}}
    assert "value-of-SAFE_SETTING" in text
    assert "/opt/tokens" not in text and "custom-token" not in text and "ssh-keys" not in text
    assert any("OPENAI_API_KEY" in w and "through a Secret of the run" in w for w in target.pod.warnings)
    assert any("ssh-keys (secret ssh)" in w for w in target.pod.warnings)


#: Credentials whose variable names say nothing, recognised by the shape of their value (and some by name).
CREDENTIAL_CORPUS = {
    "DATABASE_URL": "postgresql://analyst:hunter2-db@db.internal:5432/sales",
    "MLFLOW_TRACKING_URI": "https://ren:mlflow-pass-77@mlflow.example.org",
    "REDIS_URL": "redis://:redis-pass-42@cache:6379/0",
    "SLACK_WEBHOOK": "https://hooks.slack.com/services/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",
    "TEAMS_HOOK": "https://example.webhook.office.com/webhookb2/teams-hook-0001",
    "DISCORD": "https://discord.com/api/webhooks/123456/discord-hook-0001",
    "SENTRY_DSN": "https://0123456789abcdef0123456789abcdef@o12345.ingest.sentry.io/6789",
    "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=azurekey0001==;EndpointSuffix=core.windows.net",
    "SERVICEBUS": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=sbkey0001=",
    "MSSQL": "Server=db;Database=x;User Id=sa;Password=mssql-pass-0001;",
    "DB_PASS": "plainpass0001",
    "PGPASS": "pgpass0001",
    "JWT": "jwtvalue0001",
    "BEARER": "bearervalue0001",
    "SESSION_COOKIE": "cookievalue0001",
    "ID_DOC": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyZW4ifQ.c2lnbmF0dXJlMDAwMQ",
    "GH": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "OPENAI": "sk-proj-abcdefghijklmnop0001",
    "AWS_ID": "AKIAABCDEFGHIJKLMNOP",
    "HF": "hf_abcdefghijklmnopqrstuvwxyzABCD",
    "SIGNED_URL": "https://bucket.s3.amazonaws.com/data.csv?X-Amz-Expires=3600&signature=signedurl0001",
    "AUTH_HEADER": "Bearer headertoken0001abcdef",
    "KEYLESS_NAME": "Zm9vYmFyMDAwMWJhemJheDAwMDJxdXV4MDAwMw9876",
    "PEM": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpemkey0001\n-----END RSA PRIVATE KEY-----",
}


def test_credential_shaped_values_never_reach_the_manifest(validators, analysis, tmp_path):
    plain = {"MLFLOW_PLAIN": "http://mlflow.mlops.svc.cluster.local:5000", "LANG": "C.UTF-8", "PWD": "/home/jovyan"}

    def mutate(pod):
        pod["spec"]["containers"][0]["env"] += [{"name": k, "value": v} for k, v in {**CREDENTIAL_CORPUS, **plain}.items()]

    for schedule in (None, {"name": "analysis-ren", "cron": "0 3 * * *"}):
        _, target, m = manifest_for(analysis, pod_file(tmp_path, mutate), schedule=schedule)
        validate(validators, m)
        text = dump(m) + dump(m, "json")
        for name, value in CREDENTIAL_CORPUS.items():
            assert value not in text and value.split("\n")[0] not in text, name
        for value in plain.values():
            assert value in text
        from nb2flow.argo import env_secret_manifest

        secret = env_secret_manifest(m, target.pod.secret_env)
        assert secret["metadata"]["name"] == m["metadata"]["annotations"]["nb2flow.io/env-secret"]
        assert set(secret["data"]) >= set(CREDENTIAL_CORPUS)
        assert "JUPYTERHUB_API_TOKEN" not in secret["data"] and "JPY_API_TOKEN" not in secret["data"]  # those stay in the notebook pod
        if schedule:
            assert secret["metadata"]["name"] == "analysis-ren-env"


def test_step_containers_get_no_service_account_token_but_the_executor_does(validators, analysis, tmp_path):
    _, _, m = manifest_for(analysis, pod_file(tmp_path))
    validate(validators, m)
    assert m["spec"]["automountServiceAccountToken"] is False
    assert m["spec"]["executor"] == {"serviceAccountName": m["spec"]["serviceAccountName"]}
    _, _, m = manifest_for(analysis, pod_file(tmp_path), executor_service_account="argo-executor")
    assert m["spec"]["executor"] == {"serviceAccountName": "argo-executor"}
    from argo_rules import workflow_problems

    broken = json.loads(json.dumps(m))
    del broken["spec"]["executor"]  # Argo's own rule: no token for the main container needs an executor account
    assert workflow_problems(broken) == ["templates.step.executor.serviceAccountName must not be empty if "
                                         "automountServiceAccountToken is false"] + [
        f"templates.{t['name']}.executor.serviceAccountName must not be empty if automountServiceAccountToken is false"
        for t in broken["spec"]["templates"][2:] if "container" in t]


@pytest.mark.parametrize("setting", ["warn", "refuse"])
def test_host_paths_secrets_store_volumes_and_root_are_named(analysis, tmp_path, setting):
    from nb2flow.errors import UsageError

    def mutate(pod):
        c = pod["spec"]["containers"][0]
        pod["spec"]["volumes"] += [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}},
                                   {"name": "vault", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True,
                                                             "volumeAttributes": {"secretProviderClass": "team-vault"}}}]
        c["volumeMounts"] += [{"name": "docker", "mountPath": "/var/run/docker.sock"}, {"name": "vault", "mountPath": "/mnt/vault"}]
        c["securityContext"]["runAsUser"] = 0

    if setting == "refuse":
        with pytest.raises(UsageError) as caught:
            manifest_for(analysis, pod_file(tmp_path, mutate), risky_pod_settings="refuse")
        assert "hostPath volume docker (/var/run/docker.sock of the node" in caught.value.render()
        assert "risky_pod_settings: refuse" in caught.value.render()
        return
    _, target, m = manifest_for(analysis, pod_file(tmp_path, mutate))
    said = [w for w in target.pod.warnings if w.startswith("warning: copied to step pods: ")]
    assert [w.split(": ", 2)[2].split(" (")[0] for w in said] == ["hostPath volume docker", "secrets-store CSI volume vault",
                                                                    "runAsUser: 0"]
    assert "whoever reaches it controls the node" in said[0]


def test_sidecar_pod_uses_the_notebook_container(validators, analysis, tmp_path):
    def mutate(pod):
        proxy = {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.0", "args": ["proxy", "sidecar"],
                 "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
                 "env": [{"name": "ISTIO_META_TOKEN", "value": "x"}], "volumeMounts": [{"name": "dshm", "mountPath": "/etc/istio"}]}
        pod["spec"]["containers"].insert(0, proxy)
        pod["status"]["containerStatuses"].insert(0, {"name": "istio-proxy", "image": proxy["image"], "imageID": "docker.io/istio/proxyv2@sha256:" + "1" * 64})
        pod["spec"]["containers"][1]["securityContext"]["privileged"] = True

    _, target, m = manifest_for(analysis, pod_file(tmp_path, mutate))
    validate(validators, m)
    c = m["spec"]["templates"][1]["container"]
    assert target.pod.container == "notebook"
    assert c["image"].startswith("quay.io/jupyterhub/k8s-singleuser-sample@sha256:")
    assert "privileged" not in json.dumps(m) and "istio" not in json.dumps(m["spec"]["templates"])
    assert m["spec"]["podMetadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}  # its sidecar would never exit


def test_step_options_resources_gpu_retry_timeout_image(validators, tmp_path):
    nb = write(
        tmp_path / "opts.ipynb",
        cell("x = 1", "step:plain"),
        cell("y = x", "step:big", "cpu:4", "memory:16Gi", "retry:3", "timeout:1h"),
        cell("z = y", "step:gpu", "gpu:1"),
        cell("w = z", "step:other", "image:ghcr.io/org/special:2.0"),
        cell("v = w", "step:plain2"),
    )

    def gpu_notebook(pod):
        pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"

    _, _, m = manifest_for(nb, pod_file(tmp_path, gpu_notebook))
    validate(validators, m)
    templates = {t["name"]: t for t in m["spec"]["templates"]}
    tasks = {t["name"]: t["template"] for t in templates["pipeline"]["dag"]["tasks"]}
    assert tasks["plain"] == tasks["plain2"] == "step"  # shared template
    assert "nvidia.com/gpu" not in json.dumps(templates["step"])  # the notebook's GPU is not inherited
    big = templates[tasks["big"]]
    assert big["container"]["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert big["container"]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    assert big["retryStrategy"] == {"limit": "3", "retryPolicy": "OnFailure"} and big["timeout"] == "3600s"
    assert templates[tasks["gpu"]]["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert templates[tasks["other"]]["container"]["image"] == "ghcr.io/org/special:2.0"


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_manifest_size_grows_linearly_and_1000_steps_stay_under_1_MiB(validators, tmp_path):
    sizes = {}
    for n in (10, 100, 1000):
        cells = [cell("x0 = 0", "step:s0")] + [cell(f"x{i} = x{i - 1} + 1", f"step:s{i}") for i in range(1, n)]
        nb = write(tmp_path / f"n{n}.ipynb", *cells)
        _, _, m = manifest_for(nb, pod_file(tmp_path))
        if n == 100:
            validate(validators, m)
        sizes[n] = len(dump(m).encode())
        assert "x0 = 0" not in dump(m)  # no cell code inline
    assert sizes[1000] < 1024 * 1024
    per_step = (sizes[1000] - sizes[100]) / 900
    assert per_step < 200
    assert abs((sizes[100] - sizes[10]) / 90 - per_step) < 10  # linear


HOSTILE = ["it's \"q\"", "a\nb\n---\n...\n", "$(rm -rf /) `id`", "{{workflow.name}}", "{{=sprig.env('X')}}", "&a *a !!python/object:os.system", "ü ✓ \U0001F600", "back\\slash", "{}"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_parameter_values_cannot_change_the_manifest(validators, tmp_path, value):
    nb = write(tmp_path / "p.ipynb", cell("text = 'x'\nn = 1", "parameters"), cell("y = text", "step:a"))
    _, _, m = manifest_for(nb, pod_file(tmp_path), params={"text": value})
    validate(validators, m)
    for fmt in ("yaml", "json"):
        out = dump(m, fmt)
        back = yaml.safe_load(out) if fmt == "yaml" else json.loads(out)
        assert back == m  # the structure is exactly what was built
        args = {p["name"]: p["value"] for p in back["spec"]["arguments"]["parameters"]}
        assert json.loads(args["text"]) == value
        assert "{{" not in args["text"] and "}}" not in args["text"]
    assert len(list(yaml.safe_load_all(dump(m)))) == 1


def test_argo_json_round_trips():
    for v in [1, 2.5, True, None, "x", "{{a}}", "}}{{", ["{", {"k{": "}"}], {"nested": {"a": [1, "{{b}}"]}}, {"{{k}}": {}},
              [{"a": {"b": {}}}], "{{workflow.name}}"]:
        text = argo_json(v)
        assert json.loads(text) == v
        assert "{{" not in text  # Argo substitutes only between {{ and }}: nothing here can start a placeholder
        if isinstance(v, str):
            assert "}}" not in text and "{" not in text and "}" not in text


def test_cron_workflow(validators, analysis, tmp_path):
    _, _, m = manifest_for(analysis, pod_file(tmp_path), schedule={"name": "nightly", "cron": "0 3 * * *", "timezone": "Asia/Seoul"})
    validate(validators, m)
    assert m["kind"] == "CronWorkflow" and m["metadata"]["name"] == "nightly"
    assert m["spec"]["schedules"] == ["0 3 * * *"] and "schedule" not in m["spec"]
    assert m["spec"]["timezone"] == "Asia/Seoul"
    assert m["spec"]["workflowSpec"]["entrypoint"] == "pipeline"
    for bad, msg in ((dict(cron="every day"), "is not a schedule Argo runs: expected exactly 5 fields"), (dict(cron="0 3 * * *", timezone="Mars/Base"), "is not an IANA time zone")):
        with pytest.raises(Nb2flowError, match=msg):
            manifest_for(analysis, pod_file(tmp_path), schedule={"name": "n", **bad})


def test_schedule_snapshot_is_not_changed_by_later_edits(tmp_path, analysis):
    _, _, m1 = manifest_for(analysis, pod_file(tmp_path), schedule={"name": "n", "cron": "@daily"})
    bundle1 = m1["metadata"]["annotations"]["nb2flow.io/bundle"]
    local1 = tmp_path / ".nb2flow" / "bundles" / Path(bundle1).name
    before = {p: p.read_bytes() for p in local1.rglob("*") if p.is_file()}
    doc = json.loads(analysis.read_text())
    doc["cells"][4]["source"] = "raw = load_wine(as_frame=True)\ndf = raw.frame.copy().head(100)\n"
    analysis.write_text(json.dumps(doc))
    _, _, m2 = manifest_for(analysis, pod_file(tmp_path), schedule={"name": "n", "cron": "@daily"})
    assert m2["metadata"]["annotations"]["nb2flow.io/bundle"] != bundle1
    assert {p: p.read_bytes() for p in local1.rglob("*") if p.is_file()} == before


def test_notebook_not_on_a_mounted_volume_is_refused(tmp_path, analysis):
    with pytest.raises(Nb2flowError, match=r"/srv/elsewhere is not on a volume the step pods mount"):
        manifest_for(analysis, pod_file(tmp_path), workdir="/srv/elsewhere")
    with pytest.raises(Nb2flowError, match="read-only volume shared-datasets"):
        manifest_for(analysis, pod_file(tmp_path), workdir="/mnt/datasets/x")


def test_export_cli_prints_yaml_and_warnings(tmp_path, analysis):
    r = subprocess.run([sys.executable, "-m", "nb2flow", "export", str(analysis), "--pod-spec", str(FIXTURE), "--workdir", "/home/jovyan/work", "-o", "json"],
                       capture_output=True, text=True, env=dict(os.environ, NO_COLOR="1"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "Workflow"
    assert "nb2flow: not copied to step pods (credentials): JPY_API_TOKEN, JUPYTERHUB_API_TOKEN\n" in r.stderr
    assert "nb2flow: not copied to step pods (JupyterHub's settings for the notebook server): 16 JUPYTERHUB_* variables\n" in r.stderr
    assert TOKEN not in r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "nb2flow", "export", str(analysis), "--pod-spec", str(tmp_path / "none.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().endswith("none.json: cannot read: No such file or directory")


# ------------------------------------------------------------------ what a real cluster refuses or breaks


def test_timeouts_are_go_durations_and_parameter_names_what_argo_accepts(validators, tmp_path):
    nb = write(tmp_path / "p.ipynb", cell("α = 1\nplain = 'x'", "parameters"), cell("y = α", "step:long", "timeout:2d"))
    _, _, m = manifest_for(nb, pod_file(tmp_path), params={"plain": "ünï\x01"})
    validate(validators, m)
    step = next(t for t in m["spec"]["templates"] if t["name"] == "step")
    assert step["timeout"] == "172800s"  # Go's time.ParseDuration knows no d
    params = {p["name"]: p["value"] for p in m["spec"]["arguments"]["parameters"]}
    assert params == {"_x3b1_": "1", "plain": '"\\u00fcn\\u00ef\\u0001"'}  # ASCII only; exact after JSON decoding
    command = step["container"]["command"]
    assert "α={{workflow.parameters._x3b1_}}" in command and json.loads(params["plain"]) == "ünï\x01"


def test_kubeflow_pod_steps_opt_out_of_istio_and_see_no_gpu_without_a_tag(validators, tmp_path):
    from helpers import KF_POD_FILE

    nb = write(tmp_path / "k.ipynb", cell("x = 1", "step:prep"), cell("y = x", "step:train", "gpu:1"))
    _, target, m = manifest_for(nb, str(KF_POD_FILE), workdir="/home/jovyan", pod_annotations={"team": "churn"})
    validate(validators, m)
    spec = m["spec"]
    assert spec["podMetadata"]["annotations"] == {"team": "churn", "sidecar.istio.io/inject": "false"}
    assert "istio" not in json.dumps(spec["templates"])  # the sidecar container is never copied
    by_task = {t["name"]: t["template"] for t in spec["templates"][0]["dag"]["tasks"]}
    templates = {t["name"]: t for t in spec["templates"]}
    prep_env = {e["name"]: e.get("value") for e in templates[by_task["prep"]]["container"]["env"]}
    train_env = {e["name"]: e.get("value") for e in templates[by_task["train"]]["container"]["env"]}
    assert prep_env["NVIDIA_VISIBLE_DEVICES"] == "void" and "NVIDIA_VISIBLE_DEVICES" not in train_env
    assert "nvidia.com/gpu" not in json.dumps(templates[by_task["prep"]]["container"]["resources"])
    assert spec["securityContext"] == {"fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch"}
    assert any("PodDefaults of the notebook pod (access-ml-pipeline) are not applied" in w for w in target.pod.warnings)
    assert "pipelines.kubeflow.org" not in json.dumps(m)  # the Pipelines token volume stays with the notebook


def test_a_failed_step_lets_independent_steps_finish_unless_fail_fast(validators, analysis, tmp_path):
    _, _, m = manifest_for(analysis, pod_file(tmp_path))
    assert m["spec"]["templates"][0]["dag"]["failFast"] is False and "parallelism" not in m["spec"]
    _, _, m = manifest_for(analysis, pod_file(tmp_path), run={"fail_fast": True, "parallelism": 2, "mode": "script"})
    validate(validators, m)
    assert m["spec"]["templates"][0]["dag"]["failFast"] is True and m["spec"]["parallelism"] == 2
    bundle = tmp_path / ".nb2flow" / "bundles"
    assert any(bundle.glob("*/steps/load.py"))  # --mode script reaches the pods


@pytest.mark.parametrize("cron, problem", [
    ("0 0 3 * * *", "expected exactly 5 fields (minute hour day-of-month month day-of-week), found 6"),
    ("0 3 L * *", "day of month 'L': 'l' is not a number (L, W and # are not supported)"),
    ("0 3 * * 1#2", "day of week '1#2': '1#2' is not a number or a name (L, W and # are not supported)"),
    ("0 3 * * 7", "day of week '7': '7' is outside 0-6"),
    ("*/0 * * * *", "minute '*/0': step '0' must be a positive number"),
    ("CRON_TZ=Asia/Seoul 0 3 * * *", "a time zone prefix is not accepted in schedules; use --timezone"),
    ("@every 1d", "'@every 1d' is not @yearly, @monthly, @weekly, @daily, @hourly or @every DURATION (e.g. @every 6h)"),
])
def test_cron_schedules_argo_would_never_run_are_refused_when_scheduling(analysis, tmp_path, cron, problem):
    with pytest.raises(Nb2flowError) as info:
        manifest_for(analysis, pod_file(tmp_path), schedule={"name": "n", "cron": cron})
    assert info.value.message == f"--cron {cron!r} is not a schedule Argo runs: {problem}"


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/15 9-17 * * MON-FRI", "0 3 ? * sun", "@daily", "@every 6h", "0 3 1,15 jan-jun *"])
def test_cron_schedules_argo_runs_are_accepted(validators, analysis, tmp_path, cron):
    _, _, m = manifest_for(analysis, pod_file(tmp_path), schedule={"name": "n", "cron": cron})
    validate(validators, m)
    assert m["spec"]["schedules"] == [cron]


@pytest.mark.parametrize("volume, what", [
    ({"emptyDir": {}}, "an emptyDir volume, which every step pod gets empty"),
    ({"hostPath": {"path": "/srv/home"}}, "a hostPath volume, a folder of one node"),
])
def test_a_notebook_on_a_volume_steps_cannot_share_is_refused(analysis, tmp_path, volume, what):
    from helpers import JH_HOME_VOLUME

    def swap(pod):
        for v in pod["spec"]["volumes"]:
            if v["name"] == JH_HOME_VOLUME:
                v.pop("persistentVolumeClaim")
                v.update(volume)

    with pytest.raises(Nb2flowError) as info:
        manifest_for(analysis, pod_file(tmp_path, swap))
    assert info.value.message == (f"/home/jovyan/work is on {JH_HOME_VOLUME}, {what}: the steps would not find the step files"
                                  " or each other's values")


def test_the_argo_rules_checker_refuses_what_argo_refuses():
    """The checker fails where Argo would: each case is a manifest Argo's validation rejects."""
    from argo_rules import workflow_problems

    def wf(tasks, templates=(), args=()):
        base = [{"name": "pipeline", "dag": {"tasks": tasks}},
                {"name": "step", "inputs": {"parameters": [{"name": "step"}]}, "container": {"image": "x", "command": ["{{inputs.parameters.step}}"]}}]
        return {"kind": "Workflow", "spec": {"entrypoint": "pipeline", "templates": base + list(templates),
                                             "arguments": {"parameters": list(args)}}}

    arg = {"arguments": {"parameters": [{"name": "step", "value": "a"}]}, "template": "step"}
    ok = wf([dict(arg, name="a"), dict(arg, name="b", dependencies=["a"])])
    assert workflow_problems(ok) == []
    cases = {
        "name cannot begin with a digit": wf([dict(arg, name="1-load"), dict(arg, name="b", dependencies=["1-load"])]),
        "dependency 'nope' not defined": wf([dict(arg, name="a", dependencies=["nope"])]),
        "dependency cycle detected": wf([dict(arg, name="a", dependencies=["b"]), dict(arg, name="b", dependencies=["a"])]),
        "is invalid: Parameter/Artifact name": wf([dict(arg, name="a")], args=[{"name": "α", "value": "1"}]),
        "unknown unit in duration": wf([dict(arg, name="a")], templates=[{"name": "t", "timeout": "2d", "container": {"image": "x"}}]),
        "failed to resolve {{workflow.parameters.n}}": wf([dict(arg, name="a")], templates=[{"name": "t", "container": {"image": "x", "args": ["{{workflow.parameters.n}}"]}}]),
        "template 'ghost' undefined": wf([dict(arg, name="a", template="ghost")]),
        "'my task' is invalid": wf([dict(arg, name="my task")]),
    }
    for expected, manifest in cases.items():
        problems = workflow_problems(manifest)
        assert any(expected in p for p in problems), (expected, problems)
    cron = {"kind": "CronWorkflow", "metadata": {"name": "x" * 53}, "spec": {"schedules": ["0 0 3 * * *"], "workflowSpec": ok["spec"]}}
    problems = workflow_problems(cron)
    assert any("must not be more than 52 characters" in p for p in problems) and any("is malformed" in p for p in problems)


def test_argos_own_examples_pass_the_argo_rules_checker(validators):
    from argo_rules import workflow_problems

    if validators is None:
        pytest.skip(f"../shared is absent (looked for {SHARED}); it holds Argo's example workflows")
    for path in sorted((SHARED / "schemas" / "argo-examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Workflow" and all("dag" in t or "container" in t for t in doc["spec"]["templates"]):
                assert workflow_problems(doc) == [], path.name


def test_a_schedule_is_never_tied_to_the_node_the_notebook_runs_on_now(validators, analysis, tmp_path):
    pipeline, target, now = manifest_for(analysis, pod_file(tmp_path))
    assert JH_NODE in json.dumps(now["spec"]["affinity"])  # a run now goes where the volume is attached
    _, _, cron = manifest_for(analysis, pod_file(tmp_path), schedule={"name": "nightly", "cron": "0 3 * * *"})
    validate(validators, cron)
    spec = cron["spec"]["workflowSpec"]
    assert JH_NODE not in json.dumps(cron)
    assert spec["affinity"] == jupyterhub_pod()["spec"]["affinity"]  # the notebook pod's own, unpinned
    step = next(t for t in spec["templates"] if t["name"] == "step")
    pod_affinity = step["affinity"]["podAffinity"]
    assert pod_affinity["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {"labelSelector": {"matchLabels": {"workflows.argoproj.io/workflow": "{{workflow.name}}"}}, "topologyKey": "kubernetes.io/hostname"}]
    near = pod_affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert near["podAffinityTerm"]["labelSelector"]["matchLabels"]["component"] == "singleuser-server"
