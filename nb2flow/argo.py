"""Argo Workflow and CronWorkflow manifests for a pipeline, built as plain data.

One DAG task per step, whose ``dependencies`` are exactly the pipeline's edges. Steps share
one container template that takes the step's name as an input parameter (steps whose tags
ask for other resources, retries, a timeout or an image get a variant), so each step adds a
small constant number of bytes and no cell code is ever inline. Every pod runs the step
command of :mod:`nb2flow.runner` against the bundle on the shared volume, with the run
folder named after ``{{workflow.name}}`` so every run, scheduled or resubmitted, has its own.

Parameter values are JSON with ``{`` and ``}`` inside strings written as ``\\u007b`` and
``\\u007d``: Argo never sees a ``{{`` it could substitute, and the step decodes the exact value.
Nothing here is pasted into YAML text: the caller serializes the dict.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re

from . import __version__
from .config import ClusterConfig
from .cron import cron_problem
from .errors import UsageError
from .pipeline import Pipeline, Step
from .runner.auth import KEY_ENV
from .names import GENERATE_NAME_MAX, k8s_name, label_value
from .podspec import PodSettings, schedule_affinity
from .runner import protocol
from .tags import parse_duration, task_name

API_VERSION = "argoproj.io/v1alpha1"
# The labels and annotations on every object nb2flow makes: the one definition the rest reads.
MANAGED_BY = {"app.kubernetes.io/managed-by": "nb2flow"}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=nb2flow"
NOTEBOOK_LABEL = "nb2flow.io/notebook"
OWNER_LABEL = "nb2flow.io/owner"
NOTEBOOK_PATH = "nb2flow.io/notebook-path"
NOTEBOOK_SHA256 = "nb2flow.io/notebook-sha256"
BUNDLE = "nb2flow.io/bundle"
VERSION_ANNOTATION = "nb2flow.io/version"
# Argo's own, which nb2flow reads
ARGO_WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
ARGO_CRON_LABEL = "workflows.argoproj.io/cron-workflow"
ARGO_SCHEDULED_TIME = "workflows.argoproj.io/scheduled-time"
ARGO_NODE_ID = "workflows.argoproj.io/node-id"
ARGO_NODE_NAME = "workflows.argoproj.io/node-name"


ARGO_PARAMETER_NAME_RE = re.compile(r"^[-a-zA-Z0-9_]+$")  # Argo v4.1.2 workflow/validate/validate.go:1691


def argo_parameter_name(name: str) -> str:
    """A Python parameter name as Argo accepts it: ``α`` becomes ``_x3b1_`` (the step gets the Python name)."""
    if ARGO_PARAMETER_NAME_RE.match(name):
        return name
    return "".join(c if ARGO_PARAMETER_NAME_RE.match(c) else f"_x{ord(c):x}_" for c in name)


def argo_json(value) -> str:
    """A parameter value as an Argo workflow parameter: its wire JSON (:func:`nb2flow.runner.params.to_wire`) in
    which no ``{`` or ``}`` occurs inside strings, ASCII only (non-ASCII and control characters escaped), so
    Argo's substitution keeps it exact."""
    from .runner.params import to_wire

    return _braceless_json(to_wire(value))


def _braceless_json(data) -> str:
    if isinstance(data, str):
        return json.dumps(data, ensure_ascii=True).replace("{", "\\u007b").replace("}", "\\u007d")
    if isinstance(data, list):
        return "[" + ", ".join(_braceless_json(v) for v in data) + "]"
    if isinstance(data, dict):
        return "{" + ", ".join(f"{_braceless_json(k)}: {_braceless_json(v)}" for k, v in data.items()) + "}"
    if isinstance(data, bool) or data is None or isinstance(data, (int, float)):
        return json.dumps(data)  # NaN / Infinity too: Python's json reads them back
    raise TypeError(type(data).__name__)


def run_parameters(pipeline: Pipeline, overrides: dict) -> dict:
    """The parameter values an Argo run passes to its steps (as the steps decode them): the overrides and every
    literal default; what the run's record, and so a resume's fingerprints, hold."""
    from .runner.params import from_wire

    return {name: from_wire(json.loads(entry["value"])) for name, entry in workflow_parameters(pipeline, overrides)}


def workflow_parameters(pipeline: Pipeline, overrides: dict) -> list[tuple[str, dict]]:
    """(Python name, ``spec.arguments.parameters`` entry) for every parameter whose value can travel as JSON."""
    out = []
    for p in pipeline.parameters:
        if p.name in overrides:
            value = overrides[p.name]
        elif p.has_literal:
            value = p.default
        else:
            continue  # an expression default stays in the parameters cell
        try:
            out.append((p.name, {"name": argo_parameter_name(p.name), "value": argo_json(value)}))
        except TypeError:
            continue
    return out


def _resources(base: dict, step: Step, config: ClusterConfig) -> dict:
    res = {k: dict(v) for k, v in (base or {}).items()}
    o = step.options
    for key in ("cpu", "memory"):
        value = getattr(o, key)
        if value:
            res.setdefault("requests", {})[key] = value
            res.setdefault("limits", {})[key] = value
    if o.gpu:
        gpu = o.gpu_resource or config.gpu_resource
        res.setdefault("limits", {})[gpu] = str(o.gpu)
    return {k: v for k, v in res.items() if v}


def _variant_key(step: Step) -> tuple:
    o = step.options
    return (o.cpu, o.memory, o.gpu, o.gpu_resource, o.retry, o.timeout, o.image)


def step_command(python: str, bundle: str, run_root: str, workdir: str, param_texts: dict) -> list[str]:
    """The step command with Argo's placeholders: the run folder per workflow, the step, the parameters
    (``param_texts``: Python name -> the JSON text Argo substitutes, see :func:`parameter_texts`)."""
    from .runner import runner_digest

    return protocol.step_command(
        python, bundle, posixpath.join(run_root, "{{workflow.name}}"), "{{inputs.parameters.step}}",
        params=param_texts, cwd=workdir, join=posixpath.join, digest=runner_digest(),
    )


SCHEDULED_TIME = "scheduled_time"  # a parameter of this name gets the time a scheduled run was due


def parameter_texts(pipeline: Pipeline, named: list, overrides: dict, scheduled: bool) -> dict:
    """Python name -> what follows ``--param NAME=`` in a pod: the workflow parameter's placeholder; in a schedule,
    a ``scheduled_time`` parameter the user did not fix takes Argo's ``{{workflow.scheduledTime}}`` (RFC 3339,
    as a JSON string), so "process yesterday's data" works."""
    texts = {name: f"{{{{workflow.parameters.{entry['name']}}}}}" for name, entry in named}
    if scheduled and SCHEDULED_TIME in {p.name for p in pipeline.parameters} and SCHEDULED_TIME not in overrides:
        texts[SCHEDULED_TIME] = '"{{workflow.scheduledTime}}"'
    return texts


FINAL_TEMPLATE = "finalize"
FINAL_REQUESTS = {"cpu": "100m", "memory": "256Mi"}  # reading statuses and merging notebooks: small


def final_template(pod: PodSettings, config: ClusterConfig, *, bundle: str, run_root: str, workdir: str,
                   param_texts: dict, affinity: dict | None, env_secret: str | None = None) -> dict:
    """The exit handler: writes the run's record, merged notebook and HTML whatever the outcome, with the step
    runner (no nb2flow in the image), and posts the outcome to the ``notify`` webhook."""
    link = (f"{config.argo_ui.rstrip('/')}/workflows/{{{{workflow.namespace}}}}/{{{{workflow.name}}}}"
            if config.argo_ui else None)
    from .runner import runner_digest

    command = protocol.finalize_command(
        config.python, bundle, posixpath.join(run_root, "{{workflow.name}}"),
        workflow={"name": "{{workflow.name}}", "namespace": "{{workflow.namespace}}", "uid": "{{workflow.uid}}",
                  "phase": "{{workflow.status}}"},
        failures="{{workflow.failures}}", created="{{workflow.creationTimestamp}}",
        params=param_texts, cwd=workdir, ui_link=link, notify_on=config.notify_on, join=posixpath.join,
        digest=runner_digest())
    env = _step_env(pod.env, gpu=False, secret=env_secret, carried=[KEY_ENV] if env_secret else [])
    if config.notify:
        secret, _, key = config.notify.partition("/")
        env.append({"name": "NB2FLOW_NOTIFY_URL",
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": key or "url", "optional": True}}})
    limits = {k: v for k, v in ((pod.resources or {}).get("limits") or {}).items() if k in ("cpu", "memory")}
    resources = {"requests": dict(FINAL_REQUESTS), **({"limits": limits} if limits else {})}
    container = {"image": pod.image, "command": command, "workingDir": workdir}
    _put(container, imagePullPolicy=pod.image_pull_policy, env=env, envFrom=pod.env_from, volumeMounts=pod.volume_mounts,
         resources=resources, securityContext=pod.security_context)
    template = {"name": FINAL_TEMPLATE, "container": container}
    if affinity:
        template["affinity"] = copy.deepcopy(affinity)
    return template


def _step_env(env, *, gpu, secret: str | None = None, carried=()) -> list:
    """The notebook's env for a pod: without a GPU, ``NVIDIA_VISIBLE_DEVICES=void``, since most GPU
    images set ``all`` and a container would otherwise see every GPU of its node. ``carried``: the
    credentials' names, read from the run's Secret ``secret`` (their values are never in the manifest)."""
    out = [e for e in env if e.get("name") != "NVIDIA_VISIBLE_DEVICES"]
    for name in carried:
        out.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}})
    if not gpu:
        out.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    return out


def _carried(pod: PodSettings, env_secret: str | None) -> list:
    """The names a step reads from the run's Secret: the notebook's credentials and the key that checks the
    step files' signatures."""
    return [n for n, _ in pod.secret_env] + [KEY_ENV] if env_secret else []


def workflow_spec(pipeline: Pipeline, pod: PodSettings, config: ClusterConfig, *, bundle: str, run_root: str,
                  workdir: str, parameters: dict, labels: dict, fail_fast: bool = False, parallelism: int | None = None,
                  scheduled: bool = False, env_secret: str | None = None) -> dict:
    """The ``spec`` shared by a Workflow and a CronWorkflow's ``workflowSpec`` (``scheduled``: never tied to
    the node the notebook runs on now)."""
    run_affinity = schedule_affinity(pod) if scheduled else None
    named = workflow_parameters(pipeline, parameters)
    texts = parameter_texts(pipeline, named, parameters, scheduled)
    named = [(name, entry) for name, entry in named if texts[name].startswith("{{workflow.parameters.")]
    params = [entry for _, entry in named]
    command = step_command(config.python, bundle, run_root, workdir, texts)
    variants: dict[tuple, str] = {}
    templates = []
    for step in pipeline.steps:
        key = _variant_key(step)
        if key in variants:
            continue
        name = "step" if not variants else f"step-{len(variants)}"
        variants[key] = name
        container = {"image": step.options.image or pod.image, "command": command, "workingDir": workdir}
        _put(container, imagePullPolicy=pod.image_pull_policy, env=_step_env(pod.env, gpu=step.options.gpu, secret=env_secret,
                                                                              carried=_carried(pod, env_secret)), envFrom=pod.env_from,
             volumeMounts=pod.volume_mounts, resources=_resources(pod.resources, step, config),
             securityContext=pod.security_context)
        template = {"name": name, "inputs": {"parameters": [{"name": "step"}]}, "container": container}
        if run_affinity:
            template["affinity"] = copy.deepcopy(run_affinity)
        if step.options.retry:
            template["retryStrategy"] = {"limit": str(step.options.retry), "retryPolicy": "OnFailure"}
        if step.options.timeout:
            template["timeout"] = f"{int(step.options.timeout_seconds)}s"  # Go's time.ParseDuration has no days
        templates.append(template)
    tasks = []
    for step in pipeline.steps:
        task = {"name": step.task, "template": variants[_variant_key(step)],
                "arguments": {"parameters": [{"name": "step", "value": step.task}]}}
        if step.parents:
            task["dependencies"] = [task_name(p) for p in step.parents]
        tasks.append(task)
    templates.append(final_template(pod, config, bundle=bundle, run_root=run_root, workdir=workdir,
                                    param_texts=texts, affinity=run_affinity, env_secret=env_secret))
    annotations = dict(config.pod_annotations)
    if pod.istio_sidecar:  # Istio's sidecar never exits, so a step pod with one would never complete
        annotations.setdefault("sidecar.istio.io/inject", "false")
    security = copy.deepcopy(pod.pod_security_context)
    if security and "fsGroup" in security:  # else the kubelet chowns the whole home volume for every step pod
        security.setdefault("fsGroupChangePolicy", "OnRootMismatch")
    spec: dict = {
        "entrypoint": "pipeline",
        "onExit": FINAL_TEMPLATE,  # the record and merged notebook of every run, succeeded, failed or stopped
        # failFast false: a failed step lets independent steps finish, as a local run does (Argo's DAG default stops them)
        "templates": [{"name": "pipeline", "dag": {"tasks": tasks, "failFast": fail_fast}}] + templates,
        "podMetadata": {"labels": dict(labels), **({"annotations": annotations} if annotations else {})},
        "activeDeadlineSeconds": int(parse_duration(config.active_deadline)),
        "ttlStrategy": {"secondsAfterCompletion": int(parse_duration(config.ttl_after_finished))},
        "podGC": {"strategy": config.pod_gc},
    }
    # the steps' code (and every package it imports) gets no service-account token: only Argo's executor
    # (its init and wait containers) gets one, of the account it needs to report results
    spec["automountServiceAccountToken"] = False
    spec["executor"] = {"serviceAccountName": config.executor_service_account or pod.service_account or "default"}
    _put(spec, arguments={"parameters": params} if params else None, serviceAccountName=pod.service_account,
         parallelism=parallelism, securityContext=security, nodeSelector=pod.node_selector, tolerations=pod.tolerations,
         affinity=(pod.base_affinity if scheduled else pod.affinity), imagePullSecrets=pod.image_pull_secrets, volumes=pod.volumes)
    return spec


def _put(target: dict, **fields) -> None:
    """Set the fields that have a value, as fresh copies (a manifest never shares objects)."""
    for key, value in fields.items():
        if value:
            target[key] = copy.deepcopy(list(value) if isinstance(value, tuple) else value)


def common_labels(pipeline: Pipeline, pod: PodSettings, config: ClusterConfig) -> dict:
    labels = dict(MANAGED_BY)
    labels[NOTEBOOK_LABEL] = label_value(pipeline.notebook.stem)
    if pod.owner:
        labels[OWNER_LABEL] = label_value(pod.owner)
    for k, v in (config.labels or {}).items():
        labels[k] = label_value(str(v))
    return labels


def annotations(pipeline: Pipeline, notebook_in_pod: str, bundle: str) -> dict:
    return {
        NOTEBOOK_PATH: notebook_in_pod,
        NOTEBOOK_SHA256: pipeline.notebook.sha256,
        BUNDLE: bundle,
        VERSION_ANNOTATION: __version__,
    }


def workflow_manifest(pipeline: Pipeline, pod: PodSettings, config: ClusterConfig, *, bundle: str, run_root: str,
                      workdir: str, parameters: dict, notebook_in_pod: str, fail_fast: bool = False,
                      parallelism: int | None = None, env_secret: str | None = None) -> dict:
    """A Workflow that runs the pipeline once (``env_secret``: the Secret the credentials are read from)."""
    labels = common_labels(pipeline, pod, config)
    stem = k8s_name(pipeline.notebook.stem, max_len=GENERATE_NAME_MAX - 1)
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": {
            "generateName": f"{stem}-",
            "namespace": pod.namespace,
            "labels": labels,
            "annotations": annotations(pipeline, notebook_in_pod, bundle),
        },
        "spec": workflow_spec(pipeline, pod, config, bundle=bundle, run_root=run_root, workdir=workdir,
                              parameters=parameters, labels=labels, fail_fast=fail_fast, parallelism=parallelism,
                              env_secret=env_secret),
    }


RESUMED_FROM = "nb2flow.io/resumed-from"
#: A value only one submission has: after a lost answer, the object found under the name nb2flow chose with
#: this value is the one that submission created (see ``Kube.create``).
SUBMISSION = "nb2flow.io/submission"
#: The Secret a run's (or a schedule's) pods read the notebook's credentials from (its name only).
ENV_SECRET = "nb2flow.io/env-secret"


def env_secret_manifest(manifest: dict, values) -> dict | None:
    """The Secret holding ``values`` ((name, value) pairs) that ``manifest``'s pods read (None: none needed).
    It is created just before the Workflow or CronWorkflow and then owned by it (ownerReferences), so it goes
    when its owner goes; only nb2flow's own labels, never a value, are in the manifest."""
    import base64

    meta = manifest["metadata"]
    name = (meta.get("annotations") or {}).get(ENV_SECRET)
    if not name:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": dict(meta.get("labels") or {}),
                         "annotations": {"nb2flow.io/for": f"{manifest['kind']} {meta.get('name') or meta.get('generateName', '')}"}},
            "data": {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in values}}


def named(manifest: dict, name: str | None = None) -> dict:
    """The manifest with a name chosen here, as the API server would complete ``generateName`` (5 random
    characters), and this submission's :data:`SUBMISSION` value: sending it twice can never make two."""
    import secrets

    out = copy.deepcopy(manifest)
    meta = out["metadata"]
    prefix = meta.pop("generateName", None)
    if name is None and "name" not in meta:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the API server's alphabet for generated names
        name = (prefix or "nb2flow-") + "".join(secrets.choice(alphabet) for _ in range(5))
    if name is not None:
        meta["name"] = name
    meta.setdefault("annotations", {})[SUBMISSION] = secrets.token_hex(8)
    return out


def resumed_manifest(manifest: dict, *, name: str, kept: list, earlier: str) -> dict:
    """The Workflow of a resume: named ``name`` (its run folder is prepared before it exists), without the
    tasks of ``kept`` steps (their values are in that folder already) and without dependencies on them."""
    out = copy.deepcopy(manifest)
    meta = out["metadata"]
    meta.pop("generateName", None)
    meta["name"] = name
    meta.setdefault("annotations", {})[RESUMED_FROM] = earlier
    spec = out["spec"]
    for template in spec["templates"]:
        if template["name"] == spec["entrypoint"]:
            tasks = [t for t in template["dag"]["tasks"] if t["name"] not in kept]
            for t in tasks:
                deps = [d for d in t.get("dependencies", []) if d not in kept]
                if deps:
                    t["dependencies"] = deps
                else:
                    t.pop("dependencies", None)
            template["dag"]["tasks"] = tasks
    return out


SUCCESSFUL_HISTORY = 3
FAILED_HISTORY = 5


def cron_manifest(pipeline: Pipeline, pod: PodSettings, config: ClusterConfig, *, name: str, schedule: str,
                  timezone: str | None, bundle: str, run_root: str, workdir: str, parameters: dict,
                  notebook_in_pod: str, fail_fast: bool = False, parallelism: int | None = None,
                  env_secret: str | None = None) -> dict:
    """A CronWorkflow (``schedules:``, as Argo v3.6+ and v4 read it)."""
    problem = cron_problem(schedule)
    if problem:
        raise UsageError(f"--cron {schedule!r} is not a schedule Argo runs: {problem}",
                         hint='five fields, e.g. --cron "0 3 * * *" (at 03:00 every day)')
    if timezone:
        _check_timezone(timezone)
    labels = common_labels(pipeline, pod, config)
    spec = workflow_spec(pipeline, pod, config, bundle=bundle, run_root=run_root, workdir=workdir,
                         parameters=parameters, labels=labels, fail_fast=fail_fast, parallelism=parallelism, scheduled=True,
                         env_secret=env_secret)
    cron = {"schedules": [schedule.strip()], "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 300,
            # the workflows Argo keeps (run folders keep every run's record and notebook): failures longer, to read them
            "successfulJobsHistoryLimit": SUCCESSFUL_HISTORY, "failedJobsHistoryLimit": FAILED_HISTORY,
            "workflowMetadata": {"labels": dict(labels), "annotations": annotations(pipeline, notebook_in_pod, bundle)},
            "workflowSpec": spec}
    if timezone:
        cron["timezone"] = timezone
    return {
        "apiVersion": API_VERSION,
        "kind": "CronWorkflow",
        "metadata": {"name": name, "namespace": pod.namespace, "labels": labels,
                     "annotations": annotations(pipeline, notebook_in_pod, bundle)},
        "spec": cron,
    }


def _check_timezone(tz: str) -> None:
    try:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--timezone {tz!r} is not an IANA time zone", hint="e.g. Asia/Seoul, Europe/Berlin, UTC") from None
    except ImportError:  # pragma: no cover - Python < 3.9
        pass


def dump(manifest: dict, fmt: str = "yaml") -> str:
    """Serialize with PyYAML or json (never by text templates)."""
    if fmt == "json":
        return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    import yaml

    class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # libyaml's emitter when PyYAML has it: 7x faster
        def ignore_aliases(self, data):  # no &anchors / *aliases: each template spelled out
            return True

    def _str(dumper, data):  # multi-line strings as blocks, everything else quoted as PyYAML decides
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)
