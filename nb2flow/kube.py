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
import time
from dataclasses import dataclass

from .incluster import NO_TOKEN_HINT, SA_DIR, in_pod, pod_namespace, service_account
from .errors import (ClusterBadAnswer, ClusterBusy, ClusterConflict, ClusterDenied, ClusterError, ClusterNotFound,
                     ClusterRejected, ClusterStale, ClusterUnreachable)

GROUP, VERSION = "argoproj.io", "v1alpha1"
KINDS = {"workflows": "Workflow", "cronworkflows": "CronWorkflow"}


@dataclass(frozen=True)
class ApiPolicy:
    """How nb2flow talks to the API server, as kubectl and client-go do: a connect and a read timeout on
    every request; 429, 5xx, lost connections and timeouts asked again with capped exponential backoff and
    jitter, honouring Retry-After, for at most ``retry_for`` seconds (settings ``api_connect_timeout``,
    ``api_read_timeout``, ``api_retry_for``)."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retry_for: float = 60.0
    backoff_first: float = 0.5
    backoff_cap: float = 8.0

    @classmethod
    def from_config(cls, config) -> "ApiPolicy":
        return cls(connect_timeout=float(config.api_connect_timeout), read_timeout=float(config.api_read_timeout),
                   retry_for=float(config.api_retry_for))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try ``attempt + 1``: full jitter over a capped doubling, at least Retry-After."""
        import random

        backoff = random.uniform(0.5, 1.0) * min(self.backoff_cap, self.backoff_first * (2 ** attempt))
        return max(backoff, min(retry_after, self.backoff_cap * 4)) if retry_after else backoff


#: Tries of a request that found no connection at all (a restarting API server refuses for a moment; a
#: network policy for ever): a watch rides such a spell out on its own.
CONNECT_TRIES = 2
#: What a request may be asked again after it went unanswered: everything but a create (POST), which
#: :meth:`Kube.create` makes safe to repeat by naming the object and looking for it first.
IDEMPOTENT = ("GET", "PUT", "PATCH", "DELETE")


class Kube:
    """A connection to the API server (in-cluster, or from a kubeconfig)."""

    def __init__(self, *, context: str | None = None, kubeconfig: str | None = None, policy: ApiPolicy | None = None,
                 notice=None) -> None:
        """``notice``: called with a line for the user when a request is being asked again (None: quiet)."""
        from kubernetes import client, config

        self.policy = policy or ApiPolicy()
        self.notice = notice
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
        cfg.retries = 0  # asking again is the policy's, not urllib3's (which would repeat a POST's connect)
        self.host = cfg.host
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # --------------------------------------------------------------- requests
    def _call(self, what: str, fn, *args, method: str = "GET", namespace: str | None = None, resource: str | None = None,
              retry_for: float | None = None, expect: str | None = None, text: bool = False, read_timeout: float | None = None,
              kind: str | None = None, **kwargs):
        """One API request under the policy: timeouts, retries of what is transient, the answer decoded.

        ``expect``: "object" (a dict with metadata), "list" (``items``), or None; ``kind``: the object's kind,
        when the answer says one; ``text``: the body as text (pod logs). Every failure is a :class:`ClusterError` with one line."""
        budget = self.policy.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + budget
        attempt = 0
        timeout = (self.policy.connect_timeout, read_timeout or self.policy.read_timeout)
        while True:
            try:
                resp = self._send(what, fn, *args, namespace=namespace, resource=resource, _request_timeout=timeout,
                                  _preload_content=False, **kwargs)
                return self._decode(what, resp, expect, text, kind)
            except ClusterError as exc:
                repeatable = exc.transient and (method in IDEMPOTENT or isinstance(exc, ClusterBusy))
                if getattr(exc, "connect_failure", False) and attempt >= CONNECT_TRIES - 1:
                    repeatable = False  # a refused or unroutable connection (a network policy) is said at once
                wait = self.policy.delay(attempt, getattr(exc, "retry_after", None))
                if not repeatable or time.monotonic() + wait > deadline:
                    raise
                attempt += 1
                if self.notice and attempt == 1:
                    self.notice(f"{exc.message}; asking again for up to {int(budget)}s")
                time.sleep(wait)

    def _send(self, what: str, fn, *args, namespace, resource, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import (ConnectTimeoutError, HTTPError as Urllib3Error, NewConnectionError, ProtocolError,
                                        ReadTimeoutError)

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
                    transient=False,
                ) from None
            if _caused_by(exc, ReadTimeoutError, TimeoutError) and not _caused_by(exc, ConnectTimeoutError):
                raise ClusterUnreachable(f"{what}: no answer from the API server at {self.host} within "
                                         f"{kwargs['_request_timeout'][1]:g}s (api_read_timeout)") from None
            if _caused_by(exc, ProtocolError) and not _caused_by(exc, NewConnectionError, ConnectTimeoutError, ConnectionRefusedError):
                raise ClusterUnreachable(f"{what}: the connection to the API server at {self.host} dropped before it answered",
                                         hint="asked again where that is safe") from None
            unreachable = ClusterUnreachable(
                f"cannot reach the Kubernetes API server at {self.host} ({type(exc).__name__})",
                hint="JupyterHub's network policy often blocks notebook pods from the API server: ask your admin to allow egress to it",
            )
            unreachable.connect_failure = True  # no connection at all: asked again briefly, not for the whole spell
            raise unreachable from None

    def _decode(self, what: str, resp, expect: str | None, text: bool, kind: str | None = None):
        """The answer's body as JSON of the expected shape; anything else is :class:`ClusterBadAnswer`."""
        data = resp.data or b""
        if text:
            return data.decode("utf-8", "replace")
        ctype = (resp.headers or {}).get("Content-Type", "") if hasattr(resp, "headers") else ""
        try:
            body = json.loads(data)
        except ValueError:
            body = _NOT_JSON
        wrong = None
        if body is _NOT_JSON:
            wrong = "not JSON"
        elif not isinstance(body, dict):
            wrong = f"JSON {type(body).__name__ if body is not None else 'null'} instead of an object"
        elif expect == "list" and not isinstance(body.get("items", []), list):
            wrong = "a list without items"
        elif expect == "object" and not isinstance(body.get("metadata"), dict):
            wrong = f"an object without metadata (kind {body.get('kind', '?')})"
        elif kind and body.get("kind") not in (None, kind):
            wrong = f"a {body.get('kind')} instead of a {kind}"
        if wrong:
            first = data[:80].decode("utf-8", "replace")
            raise ClusterBadAnswer(f"{what}: the API server at {self.host} answered {wrong} "
                                   f"({ctype or 'no content type'}: {first!r})",
                                   hint="a proxy or login page in front of the API server? check the kubeconfig's server "
                                        "or KUBERNETES_SERVICE_HOST")
        return body

    def _translate(self, exc, what: str, namespace, resource) -> ClusterError:
        status = exc.status
        message = ""
        reason = ""
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message", "")
            reason = body.get("reason", "")
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
            if reason == "Conflict" or "has been modified" in message:
                return ClusterStale(f"{what}: someone changed it meanwhile (409: {message or 'conflict'})", http_status=status)
            return ClusterConflict(f"{what}: already exists{ns} (409)", hint="choose another --name, or delete the old one first",
                                   http_status=status)
        if status in (400, 422):  # 400: strict field validation's "unknown field"; 422: invalid values
            fields = "; ".join(f"{c.get('field', '?')}: {c.get('message', '')}" for c in causes) or message
            return ClusterRejected(f"{what}: the API server rejected the manifest ({status}): {fields}", http_status=status)
        if status == 429 or status >= 500:
            word = "too many requests" if status == 429 else (message or exc.reason or "server error")
            return ClusterBusy(f"{what}: the API server answered {status} ({word})", http_status=status,
                               retry_after=_retry_after((exc.headers or {}).get("Retry-After")))
        return ClusterError(f"{what}: the API server answered {status}: {message or exc.reason}", http_status=status)

    # --------------------------------------------------------------- core objects
    def get_pod(self, namespace: str, name: str) -> dict:
        return self._call(f"reading pod {name}", self.core.read_namespaced_pod, name, namespace, namespace=namespace, expect="object")

    def pvc_access_modes(self, namespace: str, claim: str) -> list[str] | None:
        try:
            data = self._call(f"reading PVC {claim}", self.core.read_namespaced_persistent_volume_claim, claim, namespace,
                              namespace=namespace, expect="object")
        except ClusterError:
            return None
        return ((data.get("status") or {}).get("accessModes") or (data.get("spec") or {}).get("accessModes") or [])

    def list_pods(self, namespace: str, selector: str, **policy) -> list[dict]:
        return self._call("listing pods", self.core.list_namespaced_pod, namespace, label_selector=selector,
                          namespace=namespace, expect="list", **policy).get("items") or []

    def pod_events(self, namespace: str, pod: str, **policy) -> list[dict]:
        """The events about a pod (scheduling, volume attach and mount, image pulls), oldest first."""
        items = self._call(f"listing the events of {pod}", self.core.list_namespaced_event, namespace,
                           field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod}", namespace=namespace,
                           expect="list", **policy).get("items") or []
        return sorted((e for e in items if isinstance(e, dict)), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def pod_log(self, namespace: str, pod: str, *, container: str = "main", follow: bool = False):
        """The log text, or an iterator of lines when following (a followed log has a connect timeout but no
        read timeout, as with `kubectl logs -f`: a quiet step is not a dead server)."""
        what = f"reading the log of {pod}"
        if follow:
            resp = self._send(what, self.core.read_namespaced_pod_log, pod, namespace, container=container, follow=True,
                              _preload_content=False, _request_timeout=(self.policy.connect_timeout, None),
                              namespace=namespace, resource=None)
            return (line.decode("utf-8", "replace") for line in resp.stream())
        return self._call(what, self.core.read_namespaced_pod_log, pod, namespace, container=container, namespace=namespace,
                          text=True)

    def put_secret(self, namespace: str, body: dict) -> dict:
        """Create the Secret, or replace the one of that name (a schedule's, made again)."""
        name = body["metadata"]["name"]
        try:
            return self._call(f"creating Secret {name}", self.core.create_namespaced_secret, namespace, body, method="PUT",
                              namespace=namespace, expect="object")  # the name is nb2flow's: asking again is safe
        except ClusterConflict:
            pass
        current = self._call(f"reading Secret {name}", self.core.read_namespaced_secret, name, namespace, namespace=namespace,
                             expect="object")
        new = dict(body, metadata=dict(body["metadata"], resourceVersion=current["metadata"].get("resourceVersion"),
                                       ownerReferences=current["metadata"].get("ownerReferences") or []))
        return self._call(f"updating Secret {name}", self.core.replace_namespaced_secret, name, namespace, new, method="PUT",
                          namespace=namespace, expect="object")

    def patch_secret(self, namespace: str, name: str, patch: dict) -> dict:
        return self._call(f"updating Secret {name}", self.core.patch_namespaced_secret, name, namespace, patch, method="PATCH",
                          namespace=namespace, expect="object")

    def delete_secret(self, namespace: str, name: str) -> None:
        self._call(f"deleting Secret {name}", self.core.delete_namespaced_secret, name, namespace, method="DELETE",
                   namespace=namespace)

    # --------------------------------------------------------------- argo objects
    def create(self, plural: str, namespace: str, body: dict, *, identity: str | None = None) -> dict:
        """Create an object, safe to ask again. ``body`` is named by nb2flow and carries the annotation
        ``identity`` with a value only this submission has: after a lost answer, a timeout or a 5xx, nb2flow
        looks the name up, and the object it finds with that value *is* the one it created (never a second
        one); a 409 for an object with another value is a true "already exists"."""
        what = f"creating {body.get('kind', plural)} {body['metadata'].get('name', '')}".rstrip()
        meta = body["metadata"]
        name = meta.get("name")
        token = (meta.get("annotations") or {}).get(identity) if identity else None
        deadline = time.monotonic() + self.policy.retry_for
        attempt = 0
        while True:
            try:
                return self._call(what, self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body,
                                  field_validation="Strict", method="POST", namespace=namespace, resource=plural,
                                  retry_for=0, expect="object")
            except ClusterConflict as exc:
                if not (name and token):
                    raise
                try:
                    existing = self.get(plural, namespace, name)
                except ClusterNotFound:
                    existing = None  # deleted in between: ask again
                if existing is not None:
                    if (existing["metadata"].get("annotations") or {}).get(identity) == token:
                        return existing  # an earlier try of this very request created it
                    raise exc
            except ClusterError as exc:
                if not exc.transient:
                    raise
                unknown = exc
                if name and token:  # did the lost request create it?
                    try:
                        existing = self.get(plural, namespace, name, retry_for=0)
                    except ClusterNotFound:
                        existing = None
                    except ClusterError as lookup:
                        if not lookup.transient:
                            raise
                        existing = None
                    if existing is not None and (existing["metadata"].get("annotations") or {}).get(identity) == token:
                        return existing
                elif isinstance(exc, ClusterUnreachable):
                    raise  # an unnamed object asked twice could be made twice
                wait = self.policy.delay(attempt, getattr(exc, "retry_after", None))
                if time.monotonic() + wait > deadline:
                    raise unknown
                attempt += 1
                if self.notice and attempt == 1:
                    self.notice(f"{exc.message}; asking again for up to {int(self.policy.retry_for)}s (safe: it is looked up by name first)")
                time.sleep(wait)

    def get(self, plural: str, namespace: str, name: str, **policy) -> dict:
        return self._call(f"reading {plural[:-1]} {name}", self.custom.get_namespaced_custom_object, GROUP, VERSION,
                          namespace, plural, name, namespace=namespace, resource=plural, expect="object",
                          kind=KINDS.get(plural), **policy)

    def list(self, plural: str, namespace: str, selector: str, **policy) -> list[dict]:
        items = self._call(f"listing {plural}", self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                           label_selector=selector, namespace=namespace, resource=plural, expect="list", **policy).get("items") or []
        return [o for o in items if isinstance(o, dict) and isinstance(o.get("metadata"), dict)]

    def replace(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        return self._call(f"updating {plural[:-1]} {name}", self.custom.replace_namespaced_custom_object, GROUP, VERSION,
                          namespace, plural, name, body, field_validation="Strict", method="PUT", namespace=namespace,
                          resource=plural, expect="object")

    def update(self, plural: str, namespace: str, name: str, change, *, tries: int = 5) -> dict:
        """Read, change (``change(current) -> new body``), replace; a 409 for a stale read is read again and
        retried, as client-go's RetryOnConflict does."""
        for attempt in range(tries):
            current = self.get(plural, namespace, name)
            body = change(current)
            body["metadata"] = dict(body.get("metadata") or {}, resourceVersion=current["metadata"].get("resourceVersion"))
            try:
                return self.replace(plural, namespace, name, body)
            except ClusterStale:
                if attempt == tries - 1:
                    raise
                time.sleep(self.policy.delay(attempt))
        raise AssertionError("unreachable")

    def patch(self, plural: str, namespace: str, name: str, body: dict, *, tries: int = 5) -> dict:
        """A merge patch (no resourceVersion: it applies to whatever is current); a 409 is asked again."""
        for attempt in range(tries):
            try:
                return self._call(f"updating {plural[:-1]} {name}", self.custom.patch_namespaced_custom_object, GROUP, VERSION,
                                  namespace, plural, name, body, method="PATCH", namespace=namespace, resource=plural,
                                  expect="object")
            except ClusterStale:
                if attempt == tries - 1:
                    raise
                time.sleep(self.policy.delay(attempt))
        raise AssertionError("unreachable")

    def delete(self, plural: str, namespace: str, name: str) -> None:
        self._call(f"deleting {plural[:-1]} {name}", self.custom.delete_namespaced_custom_object, GROUP, VERSION,
                   namespace, plural, name, method="DELETE", namespace=namespace, resource=plural)


def workflow_nodes(workflow: dict) -> dict:
    """``status.nodes``, decoding ``status.compressedNodes`` (gzip + base64) when Argo compressed them."""
    status = workflow.get("status") or {}
    if not isinstance(status, dict):
        return {}
    if status.get("nodes"):
        nodes = status["nodes"]
        return {k: v for k, v in nodes.items() if isinstance(v, dict)} if isinstance(nodes, dict) else {}
    packed = status.get("compressedNodes")
    if packed:
        try:
            nodes = json.loads(gzip.decompress(base64.b64decode(packed)))
            return {k: v for k, v in nodes.items() if isinstance(v, dict)} if isinstance(nodes, dict) else {}
        except (ValueError, OSError):
            raise ClusterError("cannot read the workflow's compressedNodes") from None
    return {}


_NOT_JSON = object()


def _retry_after(value) -> float | None:
    """Retry-After in seconds (the HTTP-date form is read as "soon")."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def _chain(exc: BaseException):
    """``exc`` and everything it wraps (urllib3 nests its reasons in ``reason``, causes and arguments)."""
    seen: set[int] = set()
    todo: list = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]


def _caused_by(exc: BaseException, *kinds) -> bool:
    return any(isinstance(e, kinds) for e in _chain(exc))


def _ssl_error(exc: BaseException) -> str | None:
    """The TLS verification failure behind a connection error (urllib3 wraps it), if that is what it is."""
    import ssl

    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return e.verify_message or str(e)
        if isinstance(e, ssl.SSLError):
            return e.reason or str(e)
    return None
