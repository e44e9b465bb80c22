"""Argo Workflow and CronWorkflow manifests for a pipeline, built as plain data.

One DAG task per step, whose ``dependencies`` are exactly the pipeline's edges. Steps share
one container template that takes the step's name as an input parameter (steps whose tags
ask for other resources, retries, a timeout or an image get a variant), so each step adds a
small constant number of bytes and no cell code is ever inline. Every pod runs the step
command of :mod:`nb2flow.runtime` against the bundle on the shared volume, with the run
folder named after ``{{workflow.name}}`` so every run, scheduled or resubmitted, has its own.

Parameter values are JSON with ``{`` and ``}`` inside strings written as ``\\u007b`` and
``\\u007d``: Argo never sees a ``{{`` it could substitute, and the step decodes the exact value.
Nothing here is pasted into YAML text: the caller serializes the dict.
"""

from __future__ import annotations

import copy
import json
import math
import posixpath
import re

from . import __version__
from .config import ClusterConfig
from .errors import UsageError
from .pipeline import Pipeline, Step
from .names import GENERATE_NAME_MAX, k8s_name, label_value
from .podspec import PodSettings
from .runner import protocol
from .tags import parse_duration, task_name

API_VERSION = "argoproj.io/v1alpha1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "nb2flow"}
NOTEBOOK_LABEL = "nb2flow.io/notebook"
OWNER_LABEL = "nb2flow.io/owner"


def argo_json(value) -> str:
    """JSON for a parameter value in which no ``{`` or ``}`` occurs inside strings."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("{", "\\u007b").replace("}", "\\u007d")
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return json.dumps(value)  # NaN / Infinity: Python's json reads them back
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(argo_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{argo_json(str(k))}: {argo_json(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value).__name__)


def workflow_parameters(pipeline: Pipeline, overrides: dict) -> list[dict]:
    """``spec.arguments.parameters``: every parameter whose value can travel as JSON."""
    out = []
    for p in pipeline.parameters:
        if p.name in overrides:
            value = overrides[p.name]
        elif p.has_literal:
            value = p.default
        else:
            continue  # an expression default stays in the parameters cell
        try:
            out.append({"name": p.name, "value": argo_json(value)})
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


def step_command(python: str, bundle: str, run_root: str, workdir: str, param_names: list[str]) -> list[str]:
    """The step command with Argo's placeholders: the run folder per workflow, the step, the parameters."""
    return protocol.step_command(
        python, bundle, posixpath.join(run_root, "{{workflow.name}}"), "{{inputs.parameters.step}}",
        params={name: f"{{{{workflow.parameters.{name}}}}}" for name in param_names}, cwd=workdir, join=posixpath.join,
    )


def workflow_spec(pipeline: Pipeline, pod: PodSettings, config: ClusterConfig, *, bundle: str, run_root: str,
                  workdir: str, parameters: dict, labels: dict) -> dict:
    """The ``spec`` shared by a Workflow and a CronWorkflow's ``workflowSpec``."""
    params = workflow_parameters(pipeline, parameters)
    command = step_command(config.python, bundle, run_root, workdir, [p["name"] for p in params])
    variants: dict[tuple, str] = {}
    templates = []
    for step in pipeline.steps:
        key = _variant_key(step)
        if key in variants:
            continue
        name = "step" if not variants else f"step-{len(variants)}"
        variants[key] = name
        container = {"image": step.options.image or pod.image, "command": command, "workingDir": workdir}
        _put(container, imagePullPolicy=pod.image_pull_policy, env=pod.env, envFrom=pod.env_from,
             volumeMounts=pod.volume_mounts, resources=_resources(pod.resources, step, config),
             securityContext=pod.security_context)
        template = {"name": name, "inputs": {"parameters": [{"name": "step"}]}, "container": container}
        if step.options.retry:
            template["retryStrategy"] = {"limit": str(step.options.retry), "retryPolicy": "OnFailure"}
        if step.options.timeout:
            template["timeout"] = step.options.timeout
        templates.append(template)
    tasks = []
    for step in pipeline.steps:
        task = {"name": step.task, "template": variants[_variant_key(step)],
                "arguments": {"parameters": [{"name": "step", "value": step.task}]}}
        if step.parents:
            task["dependencies"] = [task_name(p) for p in step.parents]
        tasks.append(task)
    spec: dict = {
        "entrypoint": "pipeline",
        "templates": [{"name": "pipeline", "dag": {"tasks": tasks}}] + templates,
        "podMetadata": {"labels": dict(labels)},
        "activeDeadlineSeconds": int(parse_duration(config.active_deadline)),
        "ttlStrategy": {"secondsAfterCompletion": int(parse_duration(config.ttl_after_finished))},
        "podGC": {"strategy": config.pod_gc},
    }
    _put(spec, arguments={"parameters": params} if params else None, serviceAccountName=pod.service_account,
         securityContext=pod.pod_security_context, nodeSelector=pod.node_selector, tolerations=pod.tolerations,
         affinity=pod.affinity, imagePullSecrets=pod.image_pull_secrets, volumes=pod.volumes)
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
        "nb2flow.io/notebook-path": notebook_in_pod,
        "nb2flow.io/notebook-sha256": pipeline.notebook.sha256,
        "nb2flow.io/bundle": bundle,
        "nb2flow.io/version": __version__,
    }


def workflow_manifest(pipeline: Pipeline, pod: PodSettings, config: ClusterConfig, *, bundle: str, run_root: str,
                      workdir: str, parameters: dict, notebook_in_pod: str) -> dict:
    """A Workflow that runs the pipeline once."""
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
                              parameters=parameters, labels=labels),
    }


CRON_FIELD = r"(\*|\?|[0-9A-Za-z,\-*/LW#]+)"
CRON_RE = re.compile(rf"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every \S+|{CRON_FIELD}( {CRON_FIELD}){{4,5}})$")


def cron_manifest(pipeline: Pipeline, pod: PodSettings, config: ClusterConfig, *, name: str, schedule: str,
                  timezone: str | None, bundle: str, run_root: str, workdir: str, parameters: dict,
                  notebook_in_pod: str) -> dict:
    """A CronWorkflow (``schedules:``, as Argo v3.6+ and v4 read it)."""
    if not CRON_RE.match(schedule.strip()):
        raise UsageError(f"--cron {schedule!r} is not a cron schedule", hint='e.g. --cron "0 3 * * *" (at 03:00 every day)')
    if timezone:
        _check_timezone(timezone)
    labels = common_labels(pipeline, pod, config)
    spec = workflow_spec(pipeline, pod, config, bundle=bundle, run_root=run_root, workdir=workdir,
                         parameters=parameters, labels=labels)
    cron = {"schedules": [schedule.strip()], "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 300,
            "workflowMetadata": {"labels": dict(labels)}, "workflowSpec": spec}
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

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):  # no &anchors / *aliases: each template spelled out
            return True

    def _str(dumper, data):  # multi-line strings as blocks, everything else quoted as PyYAML decides
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)
