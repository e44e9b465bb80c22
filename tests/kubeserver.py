"""A small Kubernetes API server for tests: real HTTP on 127.0.0.1, objects kept in memory.

It serves what nb2flow uses: pods (read, list by label, logs), events (by field selector), PVCs, and Argo workflows and
cronworkflows (create with generateName, get, list by label, replace, merge-patch, delete).
Tests can set workflow status, and queue faults per request, as a real server on a bad day gives them
(``fault(method, path regex, what)``, each taken by the first request it matches):

- ``"drop"``: the connection is closed before the request is read; ``"drop-after"``: the request is carried
  out (a create creates) and the connection closed before the answer;
- ``"hang"``: the connection is accepted and never answered (until the server stops);
- ``"html"``: 200 with a proxy's login page; ``"null"``: 200 with a JSON ``null`` body; ``"status"``: 200 with a
  ``Status`` object where another kind is asked for;
- ``"stale"``: 409 "the object has been modified" (reason Conflict), as for a stale resourceVersion;
- a status code, or ``(code, message, causes, headers)``, e.g. ``(429, "slow down", None, {"Retry-After": "1"})``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ARGO = re.compile(r"^/apis/argoproj\.io/v1alpha1/namespaces/([^/]+)/(workflows|cronworkflows)(?:/([^/]+))?$")
CORE = re.compile(r"^/api/v1/namespaces/([^/]+)/(pods|persistentvolumeclaims|events|secrets)(?:/([^/]+))?(/log)?$")


def _match_fields(obj: dict, selector: str) -> bool:
    """A field selector as the API server reads it for events (``involvedObject.name=X``, comma-joined)."""
    for part in filter(None, (selector or "").split(",")):
        path, _, value = part.partition("=")
        current = obj
        for key in path.split("."):
            current = current.get(key) if isinstance(current, dict) else None
        if current != value:
            return False
    return True


def _match_labels(obj: dict, selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for part in filter(None, (selector or "").split(",")):
        key, _, value = part.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKube:
    def __init__(self, token: str = "test-token", *, tls: tuple | None = None, argo_version: str = "4.1") -> None:
        """``tls``: (certificate file, key file) to serve HTTPS, as a real API server does. ``argo_version``:
        the CronWorkflow CRD installed, 4.x (``spec.schedules``) or 3.4/3.5 (``spec.schedule``)."""
        self.argo_version = argo_version
        self.on_create = None  # a controller's reaction to a new object: f(plural, object)
        self.admission = True  # refuse what a real API server refuses (admission.py)
        self.token = token
        self.objects: dict[tuple, dict] = {}  # (plural, namespace, name) -> object
        self.logs: dict[tuple, str] = {}  # (namespace, pod) -> text
        self.requests: list[tuple] = []  # (method, path, query)
        self.times: list[float] = []  # when each of ``requests`` came (time.monotonic())
        self.fail: list[tuple] = []  # queued (method, path regex, fault): see the module's docstring
        self.stopping = threading.Event()
        self.argo_installed = True
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            drop_answer = False

            def _send(self, status: int, body, headers=None, ctype=None) -> None:
                if self.drop_answer:  # "drop-after": done, but the answer never leaves
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else (body.encode() if isinstance(body, str) else body)
                self.send_response(status)
                self.send_header("Content-Type", ctype or ("application/json" if not isinstance(body, str) else "text/plain"))
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its read timeout)
                    self.close_connection = True

            def _status(self, code: int, message: str, causes=None, headers=None, reason=None) -> None:
                reasons = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid",
                           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                        "reason": reason or reasons.get(code, ""), "code": code}
                if causes:
                    body["details"] = {"causes": causes}
                self._send(code, body, headers)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with server.lock:
                    server.requests.append((method, url.path, query))
                    server.times.append(time.monotonic())
                    queued = None
                    for i, (m, pattern, what) in enumerate(server.fail):
                        if m == method and re.search(pattern, url.path):
                            queued = server.fail.pop(i)[2]
                            break
                if queued == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if queued == "hang":
                    server.stopping.wait(60)
                    self.close_connection = True
                    return
                if queued == "html":
                    return self._send(200, "<!DOCTYPE html><html><body><h1>Sign in to continue</h1></body></html>", ctype="text/html")
                if queued == "null":
                    return self._send(200, b"null")
                if queued == "status":  # 200 with a Status object: the wrong kind (what some proxies relay)
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
                if queued == "stale":
                    return self._status(409, "Operation cannot be fulfilled: the object has been modified; please apply your "
                                             "changes to the latest version and try again", reason="Conflict")
                if queued == "drop-after":
                    self.drop_answer = True
                elif queued is not None:
                    code, *rest = queued if isinstance(queued, tuple) else (queued,)
                    return self._status(code, rest[0] if rest else f"injected {code}", rest[1] if len(rest) > 1 else None,
                                        rest[2] if len(rest) > 2 else None)
                scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
                if scheme.lower() != "bearer" or credentials != server.token:  # the scheme is case-insensitive (RFC 7235)
                    return self._status(401, "Unauthorized")
                body = json.loads(raw) if raw else None
                m = ARGO.match(url.path)
                if m:
                    if not server.argo_installed:
                        return self._status(404, "the server could not find the requested resource")
                    return self._argo(method, m.group(1), m.group(2), m.group(3), body, query)
                m = CORE.match(url.path)
                if m:
                    return self._core(method, m.group(1), m.group(2), m.group(3), bool(m.group(4)), query, body)
                return self._status(404, "the server could not find the requested resource")

            def _admit(self, plural, body, query):
                """What a real API server refuses at admission; True when it answered."""
                from admission import field_problems, meta_problems

                meta = body.get("metadata") or {}
                problems = meta_problems(meta)
                if problems:
                    self._status(422, f"{body.get('kind', plural)} {meta.get('name') or meta.get('generateName', '')!r} is invalid: "
                                      + "; ".join(problems), [{"field": p.split(":")[0], "message": p} for p in problems])
                    return True
                if server.argo_version.startswith("3."):
                    return False  # the v4 CRDs in ../shared do not describe Argo 3.x's objects
                unknown, invalid = field_problems(plural, body, query.get("fieldValidation") == "Strict")
                if unknown:
                    self._status(400, f'{body.get("kind", plural)} in version "v1alpha1" cannot be handled as a {body.get("kind")}: '
                                      f'strict decoding error: ' + ", ".join(f'unknown field "{u}"' for u in unknown))
                    return True
                if invalid:
                    self._status(422, f"{body.get('kind', plural)} is invalid", invalid)
                    return True
                return False

            def _argo(self, method, ns, plural, name, body, query):
                key = (plural, ns, name)
                if plural == "cronworkflows" and method in ("POST", "PUT") and query.get("fieldValidation") == "Strict":
                    # each CRD knows one of the two fields; strict field validation refuses the other
                    unknown = "schedules" if server.argo_version.startswith("3.") else "schedule"
                    if unknown in (body.get("spec") or {}):
                        return self._status(400, f'CronWorkflow in version "v1alpha1" cannot be handled as a CronWorkflow: '
                                                 f'strict decoding error: unknown field "spec.{unknown}"')
                if method in ("POST", "PUT") and server.admission and self._admit(plural, body, query):
                    return
                with server.lock:
                    if method == "POST":
                        meta = body.setdefault("metadata", {})
                        if "name" not in meta:
                            meta["name"] = meta.pop("generateName", "wf-") + secrets.token_hex(3)[:5]
                        key = (plural, ns, meta["name"])
                        if key in server.objects:
                            return self._status(409, f'{plural}.argoproj.io "{meta["name"]}" already exists')
                        meta["namespace"] = ns
                        meta["resourceVersion"] = "1"
                        meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                        meta["uid"] = secrets.token_hex(8)
                        server.objects[key] = body
                        server.controller_validates(plural, body)
                        if server.on_create:
                            server.on_create(plural, body)
                        return self._send(201, body)
                    if name is None and method == "GET":
                        items = [o for (p, n, _), o in server.objects.items() if p == plural and n == ns and _match_labels(o, query.get("labelSelector", ""))]
                        return self._send(200, {"kind": "List", "items": items, "metadata": {}})
                    if key not in server.objects:
                        return self._status(404, f'{plural}.argoproj.io "{name}" not found')
                    if method == "GET":
                        return self._send(200, server.objects[key])
                    if method == "PUT":
                        return self._replace(key, body)
                    if method == "PATCH":
                        _merge(server.objects[key], body)
                        return self._send(200, server.objects[key])
                    if method == "DELETE":
                        del server.objects[key]
                        return self._send(200, {"kind": "Status", "status": "Success"})
                return self._status(405, "method not allowed")

            def _core(self, method, ns, plural, name, log, query, body=None):
                if plural == "secrets" and method != "GET":
                    return self._secret(method, ns, name, body)
                if method != "GET":
                    return self._status(405, "method not allowed")
                with server.lock:
                    if name is None:
                        items = [o for (p, n, _), o in server.objects.items() if p == plural and n == ns
                                 and _match_labels(o, query.get("labelSelector", "")) and _match_fields(o, query.get("fieldSelector", ""))]
                        return self._send(200, {"kind": "List", "items": items, "metadata": {}})
                    obj = server.objects.get((plural, ns, name))
                    if obj is None:
                        return self._status(404, f'{plural} "{name}" not found')
                    if log:
                        return self._send(200, server.logs.get((ns, name), ""))
                    return self._send(200, obj)

            def _replace(self, key, body):
                """PUT: only over the resourceVersion the client read (else 409 Conflict, as a real server); the lock is held."""
                current = server.objects[key]
                if body["metadata"].get("resourceVersion") != current["metadata"].get("resourceVersion"):
                    return self._status(409, "Operation cannot be fulfilled: the object has been modified", reason="Conflict")
                body["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
                server.objects[key] = body
                return self._send(200, body)

            def _secret(self, method, ns, name, body):
                """Secrets: create (409 for a name taken), replace (resourceVersion checked), merge-patch, delete."""
                with server.lock:
                    if method == "POST":
                        key = ("secrets", ns, body["metadata"]["name"])
                        if key in server.objects:
                            return self._status(409, f'secrets "{key[2]}" already exists')
                        body["metadata"].update(namespace=ns, resourceVersion="1", uid=secrets.token_hex(8))
                        server.objects[key] = body
                        return self._send(201, body)
                    key = ("secrets", ns, name)
                    if key not in server.objects:
                        return self._status(404, f'secrets "{name}" not found')
                    if method == "PUT":
                        return self._replace(key, body)
                    if method == "PATCH":
                        _merge(server.objects[key], body)
                        return self._send(200, server.objects[key])
                    if method == "DELETE":
                        del server.objects[key]
                        return self._send(200, {"kind": "Status", "status": "Success"})
                return self._status(405, "method not allowed")

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_PATCH(self):
                self._handle("PATCH")

            def do_DELETE(self):
                self._handle("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeKube":
        self.thread.start()
        return self

    def fault(self, method: str, pattern: str, what, times: int = 1) -> None:
        """Queue ``what`` (see the module's docstring) for the next ``times`` requests matching."""
        with self.lock:
            self.fail.extend([(method, pattern, what)] * times)

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def controller_validates(self, plural: str, obj: dict) -> None:
        """What Argo's controllers do first with a new object: run Argo's validation rules (argo_rules.py)
        and fail a workflow with "Error", or mark a CronWorkflow with a SpecError condition."""
        from argo_rules import workflow_problems

        problems = workflow_problems(obj) if obj.get("kind") in ("Workflow", "CronWorkflow") else []
        if not problems:
            return
        if plural == "workflows":
            obj["status"] = {"phase": "Error", "message": f"invalid spec: {problems[0]}"}
        else:
            obj["status"] = {"conditions": [{"type": "SpecError", "status": "True", "message": problems[0]}]}

    def add(self, plural: str, obj: dict) -> dict:
        meta = obj["metadata"]
        self.objects[(plural, meta.get("namespace", "default"), meta["name"])] = obj
        return obj

    def kubeconfig(self, path, namespace: str = "jhub") -> str:
        import yaml

        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
        }
        path.write_text(yaml.safe_dump(doc))
        return str(path)


def _merge(target: dict, patch: dict) -> None:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        elif v is None:
            target.pop(k, None)
        else:
            target[k] = v
