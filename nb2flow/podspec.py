"""What a step pod copies from the notebook's own Pod: image, volumes, security, placement, env.

:func:`pod_settings` is pure: it takes the Pod as ``kubectl get pod -o json`` prints it (or
as the API returns it) plus the settings of :mod:`nb2flow.config`, and returns
:class:`PodSettings` and the warnings a user should see. Credentials never pass: the
JupyterHub API token (``JUPYTERHUB_*``, ``JPY_*``) stays with the notebook; any plain-value variable whose name or value
looks like a credential goes to step pods through a Secret made for the run (never as a plain value in
a manifest), and the service-account token volume and other secret volumes are left out.
"""

from __future__ import annotations

import copy
import posixpath
import re
from dataclasses import dataclass, field

from .errors import UsageError

#: Names that say "credential" (carrying such a value through a Secret costs nothing when it is not one).
CREDENTIAL_NAME = re.compile(r"TOKEN|SECRET|PASS|PWD|KEY|CREDENTIAL|(^|_)PAT($|_)|AUTH|JWT|BEARER|COOKIE|SESSION|DSN|WEBHOOK|"
                             r"CONN(ECTION)?_?STR|PRIVATE|SIGNATURE|(^|_)SAS($|_)|CERT", re.I)
NOT_CREDENTIAL_NAME = frozenset({"PWD", "OLDPWD"})  # the shell's working folders
#: Values that are credentials whatever their variable is called: URLs with a password or a token as user,
#: connection strings with key fields, JWTs, PEM private keys, webhook URLs of known services, tokens of known
#: services by their prefix, URL query parameters that carry a secret, Authorization header values.
CREDENTIAL_VALUE = re.compile("|".join([
    r"^[a-z][a-z0-9+.\-]*://[^/\s@:]*:[^/\s@]+@",                       # scheme://user:password@host
    r"^[a-z][a-z0-9+.\-]*://[A-Za-z0-9_\-]{16,}@",                      # scheme://TOKEN@host (Sentry DSN)
    r"(^|;)\s*(AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd|PrivateKey|ClientSecret|Secret)\s*=",
    r"eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",         # JWT
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"^https://(hooks\.slack\.com/(services|workflows)/|(discord|discordapp)\.com/api/webhooks/|[\w.-]*webhook\.office\.com/|"
    r"outlook\.office\.com/webhook/|hooks\.zapier\.com/|chat\.googleapis\.com/v1/spaces/|api\.telegram\.org/bot)",
    r"^(ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|glpat-|xox[abposr]-|sk-[A-Za-z0-9_\-]{16,}|sk_live_|rk_live_|pk_live_|hf_[A-Za-z]{20,}|"
    r"npm_[A-Za-z0-9]{20,}|pypi-AgE|dop_v1_|SG\.[\w\-]{16,}\.|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,})",
    r"[?&](access_token|token|api_?key|key|sig|signature|secret|password|client_secret|auth)=[^&\s]{6,}",
    r"^(Bearer|Basic|Token)\s+[A-Za-z0-9+/=._\-]{12,}$",
]), re.I)
#: A long run of token characters mixing letters and digits (API keys without a known prefix).
OPAQUE_TOKEN = re.compile(r"^(?=[A-Za-z0-9+/=_\-]*[0-9])(?=[A-Za-z0-9+/=_\-]*[A-Za-z])[A-Za-z0-9+/=_\-]{32,}$")


def is_credential(name: str, value) -> bool:
    """Whether an env variable holds a credential, by its name or by the shape of its value."""
    if name.upper() not in NOT_CREDENTIAL_NAME and CREDENTIAL_NAME.search(name):
        return True
    text = str(value or "").strip()
    return bool(text) and bool(CREDENTIAL_VALUE.search(text) or OPAQUE_TOKEN.match(text))


HUB_PREFIXES = ("JUPYTERHUB_", "JPY_")
HUB_CREDENTIAL = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.I)  # JUPYTERHUB_API_TOKEN, JPY_API_TOKEN
SIDECARS = frozenset({"istio-proxy", "linkerd-proxy", "envoy", "oauth2-proxy", "cloud-sql-proxy", "vault-agent", "kube-rbac-proxy"})
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915")


@dataclass(frozen=True)
class PodSettings:
    """Everything a step pod takes from the notebook pod (or from explicit settings)."""

    image: str
    namespace: str = "default"
    image_pull_policy: str | None = None
    image_pull_secrets: tuple = ()
    volumes: tuple = ()
    volume_mounts: tuple = ()
    working_dir: str | None = None
    pod_security_context: dict | None = None
    security_context: dict | None = None
    node_selector: dict | None = None
    tolerations: tuple = ()
    affinity: dict | None = None
    service_account: str | None = None
    resources: dict = field(default_factory=dict)
    env: tuple = ()
    secret_env: tuple = field(default=(), repr=False)  # (name, value) credentials: only ever in the run's Secret
    env_from: tuple = ()
    owner: str | None = None
    node_name: str | None = None
    pod_name: str | None = None
    container: str | None = None
    istio_sidecar: bool = False  # the notebook pod has Istio's sidecar (Kubeflow): step pods must opt out
    single_pod_claims: tuple = ()  # claims that are ReadWriteOncePod (no step pod can mount them)
    rwo_claims: tuple = ()  # ReadWriteOnce claims the steps mount (a one-off run is pinned to the notebook's node)
    base_affinity: dict | None = None  # the notebook pod's own affinity, without the pin
    notebook_selector: dict | None = None  # labels that find the notebook's pod, for schedules
    warnings: tuple = ()


def notebook_container(pod: dict, name: str | None = None) -> dict:
    """The notebook's container: the named one, the one serving Jupyter, else the only non-sidecar."""
    containers = pod.get("spec", {}).get("containers") or []
    if not containers:
        raise UsageError("the pod has no containers")
    if name:
        for c in containers:
            if c.get("name") == name:
                return c
        raise UsageError(f"the pod has no container {name!r} (it has {', '.join(c.get('name', '?') for c in containers)})")
    if len(containers) == 1:
        return containers[0]

    def score(c: dict) -> int:
        n = c.get("name", "")
        s = 0
        if n in ("notebook", "jupyter", "jupyterlab", "main", "base") or n.startswith("jupyter"):
            s += 4
        ports = [p.get("containerPort") for p in c.get("ports") or []]
        if 8888 in ports or any((p.get("name") or "").startswith("notebook") for p in c.get("ports") or []):
            s += 3
        text = " ".join(map(str, (c.get("command") or []) + (c.get("args") or [])))
        if "jupyter" in text or "start-notebook" in text or "singleuser" in text:
            s += 2
        if n in SIDECARS or "proxy" in n or "sidecar" in n:
            s -= 10
        return s

    ranked = sorted(containers, key=score, reverse=True)
    if score(ranked[0]) <= 0 and len([c for c in containers if score(c) > -10]) > 1:
        raise UsageError(
            "cannot tell which container runs the notebook: " + ", ".join(c.get("name", "?") for c in containers),
            hint="name it with `container:` in nb2flow.yaml",
        )
    return ranked[0]


def pinned_image(pod: dict, container: dict) -> str:
    """The image by digest (status.containerStatuses[].imageID) when known, else the image as given."""
    image = container.get("image", "")
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") != container.get("name"):
            continue
        image_id = status.get("imageID") or ""
        for prefix in ("docker-pullable://", "docker://", "containerd://"):
            if image_id.startswith(prefix):
                image_id = image_id[len(prefix):]
        if "@sha256:" in image_id:
            return image_id
        if image_id.startswith("sha256:") and "@" not in image:
            repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
            return f"{repo}@{image_id}"
    return image


def _is_credential_volume(volume: dict) -> str | None:
    name = volume.get("name", "")
    if name.startswith("kube-api-access-"):
        return "the service-account token"
    projected = volume.get("projected")
    if projected and any("serviceAccountToken" in src for src in projected.get("sources") or []):
        return "a service-account token"
    if "secret" in volume:
        return f"secret {volume['secret'].get('secretName', '?')}"
    if projected and any("secret" in src for src in projected.get("sources") or []):
        return "a projected secret"
    return None


def filter_env(env: list, *, keep_secret_refs: bool = True) -> tuple[list, dict[str, list[str]], list]:
    """The env a step may have as plain values, the names left out by reason (never their values), and the
    credentials to carry through a Secret as ``(name, value)`` pairs (by name or by the shape of the value).
    Reasons: ``credentials`` (JupyterHub's own tokens: they stay with the notebook server), ``hub``
    (JupyterHub's settings for the notebook server), ``secret refs``."""
    kept: list = []
    carried: list = []
    dropped: dict[str, list[str]] = {"credentials": [], "hub": [], "secret refs": []}
    for item in env or []:
        name = item.get("name", "")
        value_from = item.get("valueFrom")
        if name.startswith(HUB_PREFIXES):
            dropped["credentials" if HUB_CREDENTIAL.search(name) else "hub"].append(name)
        elif value_from is not None:
            if "secretKeyRef" in value_from and not keep_secret_refs:
                dropped["secret refs"].append(name)
            else:
                kept.append(copy.deepcopy(item))  # a reference: no secret in it
        elif is_credential(name, item.get("value")):
            carried.append((name, str(item.get("value") or "")))
        else:
            kept.append(copy.deepcopy(item))
    return kept, dropped, carried


SECRETS_STORE_DRIVER = "secrets-store.csi.k8s.io"


def risky_settings(spec: dict, container: dict, volumes: list, mounts: list) -> list[str]:
    """What step pods would copy from the notebook pod that reaches beyond the pod, each named: hostPath
    volumes (a node's folders; ``docker.sock`` controls the node), secrets-store CSI volumes (cloud secrets
    mounted as files), and a root user."""
    found = []
    where = {m.get("name"): m.get("mountPath") for m in mounts}
    for v in volumes:
        if "hostPath" in v:
            path = (v["hostPath"] or {}).get("path", "?")
            node = " (the node's container runtime: whoever reaches it controls the node)" if path.rstrip("/").endswith(".sock") else ""
            found.append(f"hostPath volume {v.get('name')} ({path} of the node, at {where.get(v.get('name'), '?')}){node}")
        csi = v.get("csi") or {}
        if csi.get("driver") == SECRETS_STORE_DRIVER:
            cls = (csi.get("volumeAttributes") or {}).get("secretProviderClass", "?")
            found.append(f"secrets-store CSI volume {v.get('name')} (SecretProviderClass {cls}, at {where.get(v.get('name'), '?')})")
    for what, ctx in (("the pod", spec.get("securityContext") or {}), ("the container", container.get("securityContext") or {})):
        if ctx.get("runAsUser") == 0:
            found.append(f"runAsUser: 0 ({what} runs as root)")
    return found


def _strip_privilege(ctx: dict | None) -> dict | None:
    if not ctx:
        return None
    ctx = copy.deepcopy(ctx)
    ctx.pop("privileged", None)
    caps = ctx.get("capabilities")
    if isinstance(caps, dict) and caps.get("add"):
        caps.pop("add")
        if not caps:
            ctx.pop("capabilities")
    return ctx or None


def step_resources(base: dict) -> dict:
    """The notebook's requests and limits without GPUs (a step gets a GPU only from a gpu: tag)."""
    out = {}
    for kind in ("requests", "limits"):
        values = {k: str(v) for k, v in (base.get(kind) or {}).items() if k not in GPU_RESOURCES and "gpu" not in k}
        if values:
            out[kind] = values
    return out


def pod_settings(pod: dict, *, container: str | None = None, working_dir: str | None = None,
                 service_account: str | None = None, keep_secret_refs: bool = True,
                 rwo_claims: set | None = None, image: str | None = None, refuse_risky: bool = False) -> PodSettings:
    """Step-pod settings from the notebook's Pod. ``rwo_claims``: PVC names known to be ReadWriteOnce;
    ``refuse_risky``: refuse (instead of warning about) what :func:`risky_settings` finds."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    c = notebook_container(pod, container)
    warnings: list[str] = []

    volumes, dropped_volumes = [], {}
    for v in spec.get("volumes") or []:
        why = _is_credential_volume(v)
        if why:
            dropped_volumes[v.get("name")] = why
        else:
            volumes.append(copy.deepcopy(v))
    mounts = [copy.deepcopy(m) for m in c.get("volumeMounts") or [] if m.get("name") not in dropped_volumes and m.get("mountPath") != SA_MOUNT]
    used = {m["name"] for m in mounts}
    volumes = [v for v in volumes if v.get("name") in used]
    secret_drops = [f"{n} ({why})" for n, why in dropped_volumes.items() if not why.startswith(("the service-account", "a service-account"))]
    if secret_drops:
        warnings.append(f"not mounted in step pods (credentials): {', '.join(secret_drops)}")

    risky = risky_settings(spec, c, volumes, mounts)
    if risky and refuse_risky:
        raise UsageError(f"the notebook pod has settings step pods would copy that reach beyond the pod: {'; '.join(risky)}",
                         hint="risky_pod_settings: refuse is set in nb2flow.yaml; set it to warn to copy them with a warning")
    for what in risky:
        warnings.append(f"warning: copied to step pods: {what}")

    env, dropped_env, carried = filter_env(c.get("env") or [], keep_secret_refs=keep_secret_refs)
    why = {"credentials": "credentials", "hub": "JupyterHub's settings for the notebook server",
           "secret refs": "Secret references; secret_refs: drop"}
    for reason, names in dropped_env.items():
        if reason == "hub" and len(names) > 3:
            warnings.append(f"not copied to step pods ({why[reason]}): {len(names)} JUPYTERHUB_* variables")
        elif names:
            warnings.append(f"not copied to step pods ({why[reason]}): {', '.join(sorted(names))}")
    if carried:
        warnings.append(f"carried to step pods through a Secret of the run, never as plain values in the manifest "
                        f"(credentials, by name or value): {', '.join(sorted(n for n, _ in carried))}")
    refs = [e["name"] for e in env if "secretKeyRef" in (e.get("valueFrom") or {})]
    if refs:
        warnings.append(f"kept as Secret references (no value copied): {', '.join(refs)}; set secret_refs: drop to leave them out")

    affinity = copy.deepcopy(spec.get("affinity")) or None
    base_affinity = copy.deepcopy(affinity)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v]
    node = spec.get("nodeName")
    rwo = [cl for cl in claims if rwo_claims is None or cl in rwo_claims]
    if rwo and node:
        affinity = pin_to_node(affinity, node)
        how = "" if rwo_claims is not None else " (assumed: set rwx_claims in nb2flow.yaml for claims that are ReadWriteMany)"
        warnings.append(f"{', '.join(rwo)} is ReadWriteOnce{how}: a run now goes to the notebook's node {node}; "
                        "a scheduled run keeps its pods on one node, the notebook server's while it runs")

    owner = pod_owner(pod)
    istio = "sidecar.istio.io/status" in (meta.get("annotations") or {}) or any(
        x.get("name") == "istio-proxy" for x in spec.get("containers") or [])
    poddefaults = sorted(k for k in (meta.get("annotations") or {}) if k.startswith("poddefault.admission.kubeflow.org/"))
    if poddefaults:
        names = ", ".join(k.split("/", 1)[1].removeprefix("poddefault-") for k in poddefaults)
        warnings.append(f"PodDefaults of the notebook pod ({names}) are not applied to step pods: nb2flow does not copy the "
                        "labels that select them, so the credentials they inject stay with the notebook; add a label "
                        "under labels: in nb2flow.yaml for a step that needs one")
    return PodSettings(
        image=image or pinned_image(pod, c),
        namespace=meta.get("namespace") or "default",
        image_pull_policy=c.get("imagePullPolicy"),
        image_pull_secrets=tuple(copy.deepcopy(spec.get("imagePullSecrets") or [])),
        volumes=tuple(volumes),
        volume_mounts=tuple(mounts),
        working_dir=working_dir or c.get("workingDir"),
        pod_security_context=copy.deepcopy(spec.get("securityContext")) or None,
        security_context=_strip_privilege(c.get("securityContext")),
        node_selector=copy.deepcopy(spec.get("nodeSelector")) or None,
        tolerations=tuple(copy.deepcopy(spec.get("tolerations") or [])),
        affinity=affinity,
        service_account=service_account or spec.get("serviceAccountName") or None,
        resources=step_resources(c.get("resources") or {}),
        env=tuple(env),
        secret_env=tuple(carried),
        env_from=tuple(copy.deepcopy(c.get("envFrom") or [])),
        owner=owner,
        node_name=node,
        pod_name=meta.get("name"),
        container=c.get("name"),
        istio_sidecar=istio,
        rwo_claims=tuple(rwo),
        base_affinity=base_affinity,
        notebook_selector=_notebook_selector(meta),
        warnings=tuple(warnings),
    )


def pod_owner(pod: dict) -> str | None:
    """The user a notebook pod belongs to, as JupyterHub's spawner labels it (set by the hub, not the user)."""
    meta = pod.get("metadata") or {}
    return (meta.get("labels") or {}).get("hub.jupyter.org/username") or (meta.get("annotations") or {}).get("hub.jupyter.org/username")


def _notebook_selector(meta: dict) -> dict | None:
    """Labels that find the notebook's pod again after a restart (JupyterHub's, or a StatefulSet's)."""
    labels = meta.get("labels") or {}
    if labels.get("hub.jupyter.org/username") and labels.get("component") == "singleuser-server":
        return {"hub.jupyter.org/username": labels["hub.jupyter.org/username"], "component": "singleuser-server",
                "hub.jupyter.org/servername": labels.get("hub.jupyter.org/servername", "")}
    if labels.get("statefulset.kubernetes.io/pod-name"):
        return {"statefulset.kubernetes.io/pod-name": labels["statefulset.kubernetes.io/pod-name"]}
    return None


def schedule_affinity(settings: "PodSettings") -> dict | None:
    """Affinity for a scheduled run's pods when the home volume is ReadWriteOnce: all pods of one run on
    one node (so they never fight over the volume), preferably the notebook server's node while it runs
    (where the volume is attached), any node once it is culled; never pinned to the node the notebook
    happened to run on when scheduling. A pod that matches its own required term schedules as the first
    of its group; Argo substitutes {{workflow.name}} in a template's fields."""
    if not settings.rwo_claims:
        return None
    affinity = copy.deepcopy(settings.base_affinity) or {}
    host = "kubernetes.io/hostname"
    pod_affinity = affinity.setdefault("podAffinity", {})
    pod_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(
        {"labelSelector": {"matchLabels": {"workflows.argoproj.io/workflow": "{{workflow.name}}"}}, "topologyKey": host})
    if settings.notebook_selector:
        pod_affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": dict(settings.notebook_selector)}, "topologyKey": host}})
    return affinity


def pin_to_node(affinity: dict | None, node: str) -> dict:
    """Require scheduling on ``node`` (by name, not by a hostname label that may differ)."""
    affinity = copy.deepcopy(affinity) or {}
    node_aff = affinity.setdefault("nodeAffinity", {})
    required = node_aff.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": []})
    terms = required.setdefault("nodeSelectorTerms", [])
    match = {"key": "metadata.name", "operator": "In", "values": [node]}
    if not terms:
        terms.append({"matchFields": [match]})
    for term in terms:  # terms are ORed: every one must also name the node
        fields = term.setdefault("matchFields", [])
        if match not in fields:
            fields.append(match)
    return affinity


def mount_for(path: str, mounts) -> dict | None:
    """The volume mount that holds ``path`` (the deepest one)."""
    best = None
    for m in mounts:
        mp = m.get("mountPath", "").rstrip("/") or "/"
        if path == mp or path.startswith(mp + "/") or mp == "/":
            if best is None or len(mp) > len(best.get("mountPath", "")):
                best = m
    return best


def check_on_volume(path: str, settings: PodSettings) -> None:
    """Step files and run folders must be on a volume the step pods mount."""
    m = mount_for(posixpath.normpath(path), settings.volume_mounts)
    if m is None:
        mounts = ", ".join(x.get("mountPath", "?") for x in settings.volume_mounts) or "none"
        raise UsageError(
            f"{path} is not on a volume the step pods mount (mounts: {mounts})",
            hint="keep the notebook on the shared volume (e.g. your home folder), or set workdir: in nb2flow.yaml",
        )
    if m.get("readOnly"):
        raise UsageError(f"{path} is on the read-only volume {m.get('name')} ({m.get('mountPath')})", hint="move the notebook to a writable volume")
    volume = next((v for v in settings.volumes if v.get("name") == m.get("name")), {})
    if "emptyDir" in volume or "hostPath" in volume:
        what = "an emptyDir volume, which every step pod gets empty" if "emptyDir" in volume else "a hostPath volume, a folder of one node"
        raise UsageError(f"{path} is on {m.get('name')}, {what}: the steps would not find the step files or each other's values",
                         hint="keep the notebook on a persistent volume (a PVC, e.g. your home folder)")
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    if claim and claim in settings.single_pod_claims:
        raise UsageError(f"{path} is on claim {claim}, which is ReadWriteOncePod: only the notebook's pod may mount it",
                         hint="ask your admin for a ReadWriteOnce or ReadWriteMany home volume, or run with --local")
