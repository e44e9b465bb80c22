"""Where nb2flow itself runs: inside a Kubernetes pod or not, with which service account (no API call)."""

from __future__ import annotations

import base64
import json
import os

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NO_TOKEN_HINT = ("JupyterHub mounts none by default: an admin sets singleuser.serviceAccountName "
                 "(and applies the Role `nb2flow rbac` prints)")


def in_pod() -> bool:
    """True inside a Kubernetes pod (with or without credentials)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def in_cluster() -> bool:
    """True inside a pod that has Kubernetes credentials (a service-account token)."""
    return in_pod() and os.path.isfile(os.path.join(SA_DIR, "token"))


def pod_namespace() -> str | None:
    """This pod's namespace, from the service-account folder (None outside a pod or without one)."""
    try:
        with open(os.path.join(SA_DIR, "namespace"), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def service_account() -> tuple[str | None, str | None]:
    """(namespace, name) of this pod's service account, from its token's claims (no API call needed).

    The token is a JWT signed by the cluster; nb2flow reads its claims only to name the account in
    messages and in ``nb2flow rbac``, never to decide anything about trust.
    """
    try:
        with open(os.path.join(SA_DIR, "token"), encoding="ascii") as fh:
            payload = fh.read().strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (OSError, IndexError, ValueError, UnicodeError):
        return None, None
    sa = (claims.get("kubernetes.io") or {}).get("serviceaccount") or {}
    if sa.get("name"):
        return (claims.get("kubernetes.io") or {}).get("namespace"), sa["name"]
    sub = str(claims.get("sub", ""))  # system:serviceaccount:NAMESPACE:NAME
    parts = sub.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return parts[2], parts[3]
    return None, None
