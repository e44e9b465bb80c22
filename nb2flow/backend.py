"""Choosing where a run goes: this machine, or Argo Workflows on the cluster around it."""

from __future__ import annotations

import os

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_pod() -> bool:
    """True inside a Kubernetes pod (with or without credentials)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def in_cluster() -> bool:
    """True inside a pod that has Kubernetes credentials (a service-account token)."""
    return in_pod() and os.path.isfile(os.path.join(SA_DIR, "token"))


def choose_backend(*, local: bool = False, argo: bool = False) -> tuple[str, str]:
    """(``local`` or ``argo``, one line saying why)."""
    if local and argo:
        from .errors import UsageError

        raise UsageError("--local and --argo exclude each other")
    if local:
        return "local", "running on this machine (--local)"
    if argo:
        return "argo", "submitting to Argo Workflows (--argo)"
    if in_cluster():
        return "argo", "submitting to Argo Workflows (inside a pod with a service account; --local runs here)"
    return "local", "running on this machine (no Kubernetes credentials found)"
