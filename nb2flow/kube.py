"""Talking to Kubernetes: the notebook's Pod and PVCs, Argo Workflows and CronWorkflows, pod logs.

Everything the API server can answer wrong becomes an :class:`ClusterError` with one line
naming the cause and the fix (RBAC, namespace, Argo not installed, network policy, a rejected
field). The kubernetes package is imported only here, and only when a command needs it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os

from .backend import NO_TOKEN_HINT, SA_DIR, in_pod, pod_namespace, service_account
from .errors import (ClusterConflict, ClusterDenied, ClusterError, ClusterNotFound, ClusterRejected,
                     ClusterUnreachable)

GROUP, VERSION = "argoproj.io", "v1alpha1"


class Kube:
    """A connection to the API server (in-cluster, or from a kubeconfig)."""

    def __init__(self, *, context: str | None = None, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        if in_pod() and not kubeconfig and not context:
            if not os.path.isfile(os.path.join(SA_DIR, "token")):
                raise ClusterError(
                    f"no Kubernetes credentials in this pod: no service-account token is mounted at {SA_DIR}",
                    hint=f"{NO_TOKEN_HINT}; `nb2flow run --local` runs here meanwhile",
                )
            config.load_incluster_config(client_configuration=cfg)
            self.default_namespace = pod_namespace() or "default"
            self.pod_name = os.environ.get("HOSTNAME")
            self.in_cluster = True
        else:
            # read KUBECONFIG now: the kubernetes package reads it once, at import, and a long-lived
            # process (a kernel with the IPython extension) may change it
            kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
            try:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
            except (config.ConfigException, FileNotFoundError, OSError) as exc:
                raise ClusterError(f"no usable kubeconfig: {exc}", hint="outside a cluster, pass --pod-spec FILE.json to export offline") from None
            try:
                _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                chosen = context or active["name"]
                contexts = {c["name"]: c for c in config.list_kube_config_contexts(config_file=kubeconfig)[0]}
                self.default_namespace = contexts.get(chosen, {}).get("context", {}).get("namespace") or "default"
            except Exception:
                self.default_namespace = "default"
            self.pod_name = None
            self.in_cluster = False
        cfg.retries = 1
        self.host = cfg.host
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # --------------------------------------------------------------- errors
    def _call(self, what: str, fn, *args, namespace: str | None = None, resource: str | None = None, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise self._translate(exc, what, namespace, resource) from None
        except (Urllib3Error, OSError) as exc:
            if _ssl_error(exc):
                ca = os.path.join(SA_DIR, "ca.crt") if self.in_cluster else "the kubeconfig's certificate-authority"
                raise ClusterUnreachable(
                    f"the API server at {self.host} presented a certificate that {ca} does not vouch for ({_ssl_error(exc)})",
                    hint="a proxy or a wrong KUBERNETES_SERVICE_HOST in between? ask your admin; nothing was sent",
                ) from None
            raise ClusterUnreachable(
                f"cannot reach the Kubernetes API server at {self.host} ({type(exc).__name__})",
                hint="JupyterHub's network policy often blocks notebook pods from the API server: ask your admin to allow egress to it",
            ) from None

    def _translate(self, exc, what: str, namespace, resource) -> ClusterError:
        status = exc.status
        message = ""
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message", "")
            causes = body.get("details", {}).get("causes") or []
        except (ValueError, AttributeError):
            causes = []
        ns = f" in namespace {namespace}" if namespace else ""
        if status == 401:
            return ClusterDenied(f"{what}: the API server does not accept these credentials (401)",
                                 hint="your token may have expired; see `nb2flow rbac`", http_status=status)
        if status == 403:
            sa_ns, sa = service_account() if self.in_cluster else (None, None)
            who = f"service account {sa_ns}/{sa}" if sa else "your account"
            return ClusterDenied(f"{what}: permission denied{ns} (403): {message}",
                                 hint=f"{who} needs the Role `nb2flow rbac` prints: an admin runs `nb2flow rbac | kubectl apply -f -`",
                                 http_status=status)
        if status == 404:
            if resource in ("workflows", "cronworkflows") and ("the server could not find the requested resource" in message or not message or "page not found" in message.lower()):
                return ClusterNotFound(f"{what}: Argo Workflows is not installed in this cluster (no {resource}.argoproj.io resource)",
                                       hint="install Argo Workflows, or run with --local", http_status=status)
            return ClusterNotFound(f"{what}: not found{ns} (404)" + (f": {message}" if message else ""), http_status=status)
        if status == 409:
            return ClusterConflict(f"{what}: already exists{ns} (409)", hint="choose another --name, or delete the old one first",
                                   http_status=status)
        if status in (400, 422):  # 400: strict field validation's "unknown field"; 422: invalid values
            fields = "; ".join(f"{c.get('field', '?')}: {c.get('message', '')}" for c in causes) or message
            return ClusterRejected(f"{what}: the API server rejected the manifest ({status}): {fields}", http_status=status)
        return ClusterError(f"{what}: the API server answered {status}: {message or exc.reason}", http_status=status)

    # --------------------------------------------------------------- core objects
    def get_pod(self, namespace: str, name: str) -> dict:
        pod = self._call(f"reading pod {name}", self.core.read_namespaced_pod, name, namespace, namespace=namespace, _preload_content=False)
        return json.loads(pod.data)

    def pvc_access_modes(self, namespace: str, claim: str) -> list[str] | None:
        try:
            pvc = self._call(f"reading PVC {claim}", self.core.read_namespaced_persistent_volume_claim, claim, namespace,
                             namespace=namespace, _preload_content=False)
        except ClusterError:
            return None
        data = json.loads(pvc.data)
        return (data.get("status", {}).get("accessModes") or data.get("spec", {}).get("accessModes") or [])

    def list_pods(self, namespace: str, selector: str) -> list[dict]:
        resp = self._call("listing pods", self.core.list_namespaced_pod, namespace, label_selector=selector,
                          namespace=namespace, _preload_content=False)
        return json.loads(resp.data).get("items", [])

    def pod_events(self, namespace: str, pod: str) -> list[dict]:
        """The events about a pod (scheduling, volume attach and mount, image pulls), oldest first."""
        resp = self._call(f"listing the events of {pod}", self.core.list_namespaced_event, namespace,
                          field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod}", namespace=namespace,
                          _preload_content=False)
        items = json.loads(resp.data).get("items", [])
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def pod_log(self, namespace: str, pod: str, *, container: str = "main", follow: bool = False):
        """The log text, or an iterator of lines when following."""
        if follow:
            resp = self._call(f"reading the log of {pod}", self.core.read_namespaced_pod_log, pod, namespace,
                              container=container, follow=True, _preload_content=False, namespace=namespace)
            return (line.decode("utf-8", "replace") for line in resp.stream())
        return self._call(f"reading the log of {pod}", self.core.read_namespaced_pod_log, pod, namespace,
                          container=container, namespace=namespace)

    # --------------------------------------------------------------- argo objects
    def create(self, plural: str, namespace: str, body: dict) -> dict:
        return self._call(f"creating a {body.get('kind', plural)}", self.custom.create_namespaced_custom_object, GROUP, VERSION,
                          namespace, plural, body, field_validation="Strict", namespace=namespace, resource=plural)

    def get(self, plural: str, namespace: str, name: str) -> dict:
        return self._call(f"reading {plural[:-1]} {name}", self.custom.get_namespaced_custom_object, GROUP, VERSION,
                          namespace, plural, name, namespace=namespace, resource=plural)

    def list(self, plural: str, namespace: str, selector: str) -> list[dict]:
        return self._call(f"listing {plural}", self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                          label_selector=selector, namespace=namespace, resource=plural).get("items", [])

    def replace(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        return self._call(f"updating {plural[:-1]} {name}", self.custom.replace_namespaced_custom_object, GROUP, VERSION,
                          namespace, plural, name, body, field_validation="Strict", namespace=namespace, resource=plural)

    def patch(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        return self._call(f"updating {plural[:-1]} {name}", self.custom.patch_namespaced_custom_object, GROUP, VERSION,
                          namespace, plural, name, body, namespace=namespace, resource=plural)

    def delete(self, plural: str, namespace: str, name: str) -> None:
        self._call(f"deleting {plural[:-1]} {name}", self.custom.delete_namespaced_custom_object, GROUP, VERSION,
                   namespace, plural, name, namespace=namespace, resource=plural)


def workflow_nodes(workflow: dict) -> dict:
    """``status.nodes``, decoding ``status.compressedNodes`` (gzip + base64) when Argo compressed them."""
    status = workflow.get("status") or {}
    if status.get("nodes"):
        return status["nodes"]
    packed = status.get("compressedNodes")
    if packed:
        try:
            return json.loads(gzip.decompress(base64.b64decode(packed)))
        except (ValueError, OSError):
            raise ClusterError("cannot read the workflow's compressedNodes") from None
    return {}


def _ssl_error(exc: BaseException) -> str | None:
    """The TLS verification failure behind a connection error (urllib3 wraps it), if that is what it is."""
    import ssl

    seen: set[int] = set()
    todo: list = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return e.verify_message or str(e)
        if isinstance(e, ssl.SSLError):
            return e.reason or str(e)
        todo += [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
    return None
