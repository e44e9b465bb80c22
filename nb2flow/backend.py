"""Choosing where a run goes: this machine, or the Kubernetes cluster around it."""

from __future__ import annotations

import os

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_cluster() -> bool:
    """True inside a pod that has Kubernetes credentials (a service-account token)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.isfile(os.path.join(SA_DIR, "token"))


def choose_backend(*, local: bool = False) -> tuple[str, str]:
    """(backend, one line saying why)."""
    if local:
        return "local", "running on this machine (--local)"
    if in_cluster():
        return "local", "running on this machine (the Argo backend is not part of this version; use --local to silence this)"
    return "local", "running on this machine (no Kubernetes credentials found)"
