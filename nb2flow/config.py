"""Cluster settings: built-in defaults < ``~/.config/nb2flow/config.yaml`` < ``nb2flow.yaml``
beside the notebook < command-line flags. Applied here, in one place.

Every key is listed in :data:`KEYS` with its meaning (the README's table is made from the
same list); an unknown key is reported with the file it came from and a did-you-mean.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, replace

from .errors import UsageError
from .tags import parse_duration
from .yamlfile import load_mapping

KEYS = {
    "backend": "where `nb2flow run` runs without --local/--argo: auto (default: Argo inside a pod with a service-account token, else here), local, or argo",
    "namespace": "namespace for workflows (default: the notebook pod's, else the kubeconfig's)",
    "context": "kubeconfig context, outside a cluster",
    "container": "the notebook container's name, when the pod has several and nb2flow cannot tell",
    "image": "image for step pods instead of the notebook's (explicit settings without a pod)",
    "service_account": "service account step pods run as (default: the notebook's)",
    "executor_service_account": "the account Argo's executor (the step pods' init and wait containers) runs as; the steps' own containers get no service-account token (default: the step pods' account; `nb2flow rbac --runner NAME` prints its Role)",
    "workdir": "the notebook's folder as step pods see it (default: the notebook's absolute folder)",
    "shared_workdir": "true when, outside the notebook's pod, this folder is the pod's volume mounted here (else run and schedule refuse: the step pods could not see the step files)",
    "python": "interpreter in the image that runs nb2flow_step.py (default: python3)",
    "risky_pod_settings": "warn (default) or refuse: what to do when the notebook pod has hostPath volumes (a docker.sock), secrets-store CSI volumes or runs as root (runAsUser: 0), which step pods would copy",
    "secret_refs": "keep (default) or drop env variables that reference Secrets (valueFrom.secretKeyRef)",
    "rwx_claims": "PVC names that are ReadWriteMany, offline (others are taken as ReadWriteOnce and steps are pinned to the notebook's node)",
    "gpu_resource": "resource name a gpu:N tag asks for (default: nvidia.com/gpu)",
    "active_deadline": "longest a workflow may run, a duration (default: 24h)",
    "ttl_after_finished": "how long a finished workflow is kept (default: 7d)",
    "pod_gc": "Argo podGC strategy (default: OnPodSuccess)",
    "argo_ui": "base URL of the Argo UI, for links (e.g. https://argo.example.org)",
    "notify": "a Secret with a webhook URL, as SECRET/KEY (e.g. nb2flow-notify/url): the end of each Argo run is posted there as JSON (outcome, failing step and cell, links), with a Slack-style text field",
    "notify_on": "failure (default) or always: which Argo runs are posted to the notify webhook",
    "api_connect_timeout": "seconds to wait for a connection to the Kubernetes API server, each request (default: 5)",
    "api_read_timeout": "seconds to wait for the API server's answer, each request (default: 30)",
    "api_retry_for": "how long a request the API server answered 429 or 5xx, or did not answer, is asked again, with backoff, before nb2flow gives up; also how long `--watch` rides out such a spell (default: 60 seconds)",
    "labels": "extra labels for workflows and their pods",
    "pod_annotations": "annotations for step pods (e.g. sidecar.istio.io/inject: \"false\", which nb2flow sets itself when the notebook pod has Istio's sidecar)",
    "volumes": "explicit volumes (a list of Kubernetes Volume objects), without a notebook pod",
    "volume_mounts": "explicit volumeMounts for those volumes",
    "image_pull_secrets": "explicit imagePullSecrets (a list of {name: ...})",
    "node_selector": "explicit nodeSelector",
    "tolerations": "explicit tolerations",
    "env": "explicit env (a list of {name, value})",
    "resources": "explicit resources ({requests: ..., limits: ...})",
}
CONFIG_NAMES = ("nb2flow.yaml", "nb2flow.yml")
BOOKKEEPING = ("sources", "warnings", "origins")  # fields of ClusterConfig that are not settings


@dataclass(frozen=True)
class ClusterConfig:
    backend: str = "auto"
    namespace: str | None = None
    context: str | None = None
    container: str | None = None
    image: str | None = None
    service_account: str | None = None
    executor_service_account: str | None = None
    workdir: str | None = None
    shared_workdir: bool = False
    python: str = "python3"
    secret_refs: str = "keep"
    risky_pod_settings: str = "warn"
    rwx_claims: tuple = ()
    gpu_resource: str = "nvidia.com/gpu"
    active_deadline: str = "24h"
    ttl_after_finished: str = "7d"
    pod_gc: str = "OnPodSuccess"
    argo_ui: str | None = None
    notify: str | None = None
    notify_on: str = "failure"
    api_connect_timeout: float = 5.0
    api_read_timeout: float = 30.0
    api_retry_for: float = 60.0
    labels: dict = field(default_factory=dict)
    pod_annotations: dict = field(default_factory=dict)
    volumes: tuple = ()
    volume_mounts: tuple = ()
    image_pull_secrets: tuple = ()
    node_selector: dict = field(default_factory=dict)
    tolerations: tuple = ()
    env: tuple = ()
    resources: dict = field(default_factory=dict)
    sources: tuple = ()  # files read, for messages
    origins: dict = field(default_factory=dict)  # key -> the file that set it, for messages
    warnings: tuple = ()

    def with_flags(self, **flags) -> "ClusterConfig":
        given = {k: v for k, v in flags.items() if v is not None}
        return replace(self, **given)


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return load_mapping(text, path, UsageError, what="settings")


def load_config(notebook: str | None, *, user_file: str | None = None) -> ClusterConfig:
    """Defaults, then the user's file, then the notebook folder's ``nb2flow.yaml``."""
    files = [user_file or os.path.join(os.path.expanduser("~"), ".config", "nb2flow", "config.yaml")]
    if notebook:
        from .runner.protocol import notebook_folder

        folder = notebook_folder(notebook)
        files += [os.path.join(folder, n) for n in CONFIG_NAMES]
    values: dict = {}
    sources, warnings = [], []
    origins: dict = {}
    names = {f.name for f in fields(ClusterConfig)} - set(BOOKKEEPING)
    for path in files:
        if not os.path.isfile(path):
            continue
        data = _read_yaml(path)
        sources.append(path)
        for key, value in data.items():
            if key not in names:
                close = difflib.get_close_matches(str(key), sorted(names), n=1)
                warnings.append(f"{path}: unknown setting {key!r}" + (f" (did you mean {close[0]}?)" if close else ""))
                continue
            values[key] = _coerce(key, value, path)
            origins[key] = path
    return replace(ClusterConfig(**values), sources=tuple(sources), warnings=tuple(warnings), origins=origins)


def _coerce(key: str, value, path: str):
    if key in ("rwx_claims", "volumes", "volume_mounts", "image_pull_secrets", "tolerations", "env"):
        if not isinstance(value, list):
            raise UsageError(f"{path}: {key} must be a list")
        return tuple(value)
    if key in ("labels", "node_selector", "resources", "pod_annotations"):
        if not isinstance(value, dict):
            raise UsageError(f"{path}: {key} must be a mapping")
        return {str(k): (v if key == "resources" else str(v)) for k, v in value.items()}
    if key in ("active_deadline", "ttl_after_finished"):
        try:
            parse_duration(str(value))
        except ValueError:
            raise UsageError(f"{path}: {key}: {value!r} is not a duration (e.g. 24h, 7d)") from None
        return str(value)
    if key in ("api_connect_timeout", "api_read_timeout", "api_retry_for"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400 or (value == 0 and key != "api_retry_for"):
            raise UsageError(f"{path}: {key} must be a number of seconds (e.g. {getattr(ClusterConfig, key):g})")
        return float(value)
    if key == "shared_workdir":
        if not isinstance(value, bool):
            raise UsageError(f"{path}: shared_workdir must be true or false")
        return value
    if key == "backend" and value != "auto":
        from .backends import is_registered, names

        if not is_registered(value):
            raise UsageError(f"{path}: backend must be auto or one of: {', '.join(names())}")
    if key == "notify_on" and value not in ("failure", "always"):
        raise UsageError(f"{path}: notify_on must be failure or always")
    if key == "notify" and (not isinstance(value, str) or not value.strip("/") or value.count("/") > 1):
        raise UsageError(f"{path}: notify must name a Secret and its key, as SECRET/KEY (e.g. nb2flow-notify/url)")
    if key == "risky_pod_settings" and value not in ("warn", "refuse"):
        raise UsageError(f"{path}: risky_pod_settings must be warn or refuse")
    if key == "secret_refs" and value not in ("keep", "drop"):
        raise UsageError(f"{path}: secret_refs must be keep or drop")
    if not isinstance(value, (str, int, float)):
        raise UsageError(f"{path}: {key} must be a string")
    return str(value)
