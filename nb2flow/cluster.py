"""The cluster side of nb2flow: export, submit, watch, status, logs, stop, delete, schedules, RBAC.

Where the step pods' settings come from, in this order: ``--pod-spec FILE.json`` (offline),
``--from-pod NAME`` (kubeconfig), the notebook's own Pod when running inside one, else
explicit settings from the config file (``image:`` and friends).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
from dataclasses import dataclass, replace

from . import argo as A
from .argo import cron_manifest, workflow_manifest
from .config import ClusterConfig
from .errors import UsageError
from .incluster import in_pod
from .errors import ClusterConflict, ClusterError, ClusterRejected
from .kube import Kube, workflow_nodes
from .materialize import materialize
from .names import file_slug
from .pipeline import Pipeline
from .podspec import PodSettings, check_on_volume, pod_settings, step_resources
from .progress import StepView, make_reporter
from .runner.protocol import ARGO_PHASES, BUNDLES_DIR, RUNS_DIR, StepState, notebook_folder, runs_root
from .runner.record import parse_timestamp


@dataclass(frozen=True)
class Target:
    """Where a pipeline will run: step-pod settings and the notebook folder as the pods see it."""

    pod: PodSettings
    config: ClusterConfig
    workdir: str
    local_dir: str
    kube: Kube | None = None

    @property
    def namespace(self) -> str:
        return self.pod.namespace


NO_POD_SETTINGS = "no-pod-settings"  # the error code: nothing to copy the step pods' image and volumes from


def pod_from_file(path: str) -> dict:
    """A Pod from a `kubectl get pod -o json` dump; bad input is a one-line error."""
    try:
        with open(path, encoding="utf-8") as fh:
            pod = json.load(fh)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})", hint="use `kubectl get pod NAME -o json`") from None
    if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod" or "spec" not in pod:
        raise UsageError(f"{path}: not a Pod (expected `kubectl get pod NAME -o json` output)")
    return pod


def resolve_target(notebook: str, config: ClusterConfig, *, pod_spec: str | None = None, from_pod: str | None = None,
                   need_kube: bool = False, notice=None) -> Target:
    """``notice``: where lines about requests being asked again go (None: nowhere)."""
    from .kube import ApiPolicy

    local_dir = notebook_folder(notebook)
    kube = None
    policy = ApiPolicy.from_config(config)
    pod = None
    if pod_spec:
        pod = pod_from_file(pod_spec)
    elif from_pod:
        kube = Kube(context=config.context, policy=policy, notice=notice)
        pod = kube.get_pod(config.namespace or kube.default_namespace, from_pod)
    elif in_pod() and not config.image:
        kube = Kube(policy=policy, notice=notice)  # says so when the pod has no service-account token
        if not kube.pod_name:
            raise UsageError("inside a pod, but HOSTNAME does not name it", hint="pass --from-pod NAME")
        pod = kube.get_pod(kube.default_namespace, kube.pod_name)
    if need_kube and kube is None:
        kube = Kube(context=config.context, policy=policy, notice=notice)

    if pod is not None:
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod.get("spec", {}).get("volumes") or [] if "persistentVolumeClaim" in v]
        rwo: set | None
        single_pod: set = set()
        if kube is not None and claims:
            rwo = set()
            for claim in claims:
                modes = kube.pvc_access_modes(pod["metadata"].get("namespace") or kube.default_namespace, claim)
                if modes is None or "ReadWriteOnce" in modes or "ReadWriteOncePod" in modes:
                    rwo.add(claim)
                if modes and "ReadWriteOncePod" in modes:
                    single_pod.add(claim)
        elif config.rwx_claims:
            rwo = set(claims) - set(config.rwx_claims)
        else:
            rwo = None  # offline and not told: assume ReadWriteOnce (JupyterHub's default home volume)
        settings = pod_settings(pod, container=config.container, service_account=config.service_account,
                                keep_secret_refs=config.secret_refs == "keep", rwo_claims=rwo, image=config.image,
                                refuse_risky=config.risky_pod_settings == "refuse")
        settings = replace(settings, single_pod_claims=tuple(sorted(single_pod)))
    elif config.image:
        from .podspec import filter_env

        env, _, carried = filter_env(list(config.env), keep_secret_refs=config.secret_refs == "keep")
        settings = PodSettings(
            image=config.image, namespace="default", image_pull_secrets=tuple(config.image_pull_secrets),
            volumes=tuple(config.volumes), volume_mounts=tuple(config.volume_mounts), node_selector=dict(config.node_selector) or None,
            tolerations=tuple(config.tolerations), service_account=config.service_account, env=tuple(env),
            secret_env=tuple(carried),
            resources=step_resources(config.resources),
        )
    else:
        raise UsageError(
            "no notebook pod to copy the image and volumes from",
            hint="run inside the notebook's pod, or pass --pod-spec FILE.json or --from-pod NAME, or set image: in nb2flow.yaml",
            code=NO_POD_SETTINGS,
        )
    namespace = config.namespace or (pod or {}).get("metadata", {}).get("namespace") or (kube.default_namespace if kube else None) or "default"
    settings = replace(settings, namespace=namespace)
    workdir = config.workdir or local_dir
    workdir = posixpath.normpath(workdir)
    check_on_volume(workdir, settings)
    return Target(pod=settings, config=config, workdir=workdir, local_dir=local_dir, kube=kube)


STEP_FILES_HINT = ("run nb2flow in the notebook's pod (its terminal), or, if this folder is that volume mounted here, "
                   "set shared_workdir: true in nb2flow.yaml")


def check_step_files_reach_pods(target: Target, *, submitting: bool) -> str | None:
    """Outside the notebook's pod, this folder is not the pod's volume unless the user says so
    (shared_workdir): refuse to submit (never a workflow whose every step fails); for an export,
    the warning to print. None when the step pods will see the step files."""
    if in_pod() or target.config.shared_workdir:
        return None
    why = (f"the step files would be written to {target.local_dir}, on this machine, but the step pods read them from "
           f"{target.workdir} on the notebook pod's volume")
    if submitting:
        raise UsageError(why, hint=STEP_FILES_HINT)
    return why


def bundle_id(pipeline: Pipeline, fingerprints: dict) -> str:
    """The step files' folder: named by their content *and* the notebook's whole name, so two notebooks
    never share one (the same content under two names, or two names alike in their first 40 characters)."""
    key = {"notebook": os.path.basename(pipeline.path), "steps": fingerprints}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"{file_slug(pipeline.notebook.stem, 40)}-{digest}"


def prepare(pipeline: Pipeline, target: Target, parameters: dict, *, schedule: dict | None = None, mode: str = "notebook",
            fail_fast: bool = False, parallelism: int | None = None) -> tuple[dict, str]:
    """Write the step files (a snapshot named by their content) and build the manifest."""
    from .materialize import fingerprints

    from .runs import private
    from .runner.files import make_private_dirs

    prints = fingerprints(pipeline, mode)
    ident = bundle_id(pipeline, prints)
    local_bundle = os.path.join(target.local_dir, BUNDLES_DIR, ident)
    make_private_dirs(os.path.dirname(local_bundle))
    private(os.path.dirname(os.path.dirname(local_bundle)))
    materialize(pipeline, local_bundle, mode=mode, cwd=target.workdir, prints=prints)
    bundle = posixpath.join(target.workdir, BUNDLES_DIR, ident)
    run_root = posixpath.join(target.workdir, RUNS_DIR)
    notebook_in_pod = posixpath.join(target.workdir, os.path.basename(pipeline.path))
    # the Secret of the key that checks the step files' signatures and of the notebook's credentials: one a
    # schedule keeps, else a new one each run
    import secrets

    from .names import k8s_name

    env_secret = (f"{schedule['name']}-env" if schedule
                  else f"{k8s_name(pipeline.notebook.stem, max_len=40)}-env-{secrets.token_hex(4)}")
    common = dict(bundle=bundle, run_root=run_root, workdir=target.workdir, parameters=parameters, notebook_in_pod=notebook_in_pod,
                  fail_fast=fail_fast, parallelism=parallelism, env_secret=env_secret)
    if schedule:
        manifest = cron_manifest(pipeline, target.pod, target.config, name=schedule["name"], schedule=schedule["cron"],
                                 timezone=schedule.get("timezone"), **common)
    else:
        manifest = workflow_manifest(pipeline, target.pod, target.config, **common)
    from .argo import ENV_SECRET

    manifest["metadata"]["annotations"][ENV_SECRET] = env_secret
    return manifest, local_bundle


def secret_values(target: Target) -> list:
    """What the run's Secret holds: the notebook's credentials, and the user's key (see :mod:`nb2flow.keys`)."""
    from .keys import user_key
    from .runner.auth import KEY_ENV

    return list(target.pod.secret_env) + [(KEY_ENV, user_key().hex())]


def prepare_resume(pipeline: Pipeline, target: Target, manifest: dict, earlier_dir: str, earlier: dict, parameters: dict,
                   mode: str) -> tuple[dict | None, dict]:
    """The resume of an Argo run: which steps are kept (succeeded, unchanged, parents kept), a run folder for
    the new workflow holding their values, executed notebooks and a ``reused`` status, and the Workflow
    of the other steps. Returns (manifest, kept) — no manifest when every step is kept."""
    import secrets

    from .argo import resumed_manifest, run_parameters
    from .materialize import fingerprints
    from .names import GENERATE_NAME_MAX, k8s_name
    from .runner.files import make_private_dirs, write_json
    from .runner.protocol import RunLayout, status_entry
    from .runner.record import step_fingerprint
    from .runs import copy_step_results, reusable_steps

    values = run_parameters(pipeline, parameters)
    prints = {name: step_fingerprint(fp, values) for name, fp in fingerprints(pipeline, mode).items()}
    kept = reusable_steps(earlier, prints, {s.name: s.parents for s in pipeline.steps})
    if len(kept) == len(pipeline.steps):
        return None, kept
    name = f"{k8s_name(pipeline.notebook.stem, max_len=GENERATE_NAME_MAX - 1)}-{secrets.token_hex(3)[:5]}"
    new = RunLayout(os.path.join(runs_root(target.local_dir), name))
    make_private_dirs(new.root)
    for step_name, entry in kept.items():
        task = entry.get("task") or step_name
        copy_step_results(earlier_dir, new.root, task)
        write_json(new.status(task), status_entry(step_name, StepState.REUSED, stage="ended", attempt=entry.get("attempts", 1),
                                                  started=entry.get("started"), ended=entry.get("ended"),
                                                  reused_from=earlier.get("run_id")))
    tasks = [(earlier["steps"][n].get("task") or n) for n in kept]
    return resumed_manifest(manifest, name=name, kept=tasks, earlier=earlier.get("run_id", "")), kept


def whoami(kube: Kube) -> str | None:
    """Who runs this command, as the owner label nb2flow puts on objects: the user JupyterHub's spawner labelled
    this notebook pod with (the user cannot change it). None outside a notebook pod: nb2flow cannot tell."""
    from .errors import ClusterError
    from .names import label_value
    from .podspec import pod_owner

    if not (kube.in_cluster and kube.pod_name):
        return None
    try:
        owner = pod_owner(kube.get_pod(kube.default_namespace, kube.pod_name))
    except ClusterError:
        return None
    return label_value(owner) if owner else None


def check_owner(kube: Kube, obj: dict, *, what: str, verb: str, force: bool) -> str | None:
    """Management commands act on the user's own objects only: refuse another user's Workflow or CronWorkflow
    (the ``nb2flow.io/owner`` label) unless ``force``, saying whose it is. Returns a line to print when acting
    on someone else's with ``force`` (None: it is the user's own)."""
    from .argo import MANAGED_BY, OWNER_LABEL

    labels = (obj.get("metadata") or {}).get("labels") or {}
    owner = labels.get(OWNER_LABEL)
    me = whoami(kube)
    if owner and owner == me:
        return None
    if any(labels.get(k) != v for k, v in MANAGED_BY.items()):
        whose = "not made by nb2flow"
    elif owner:
        whose = f"made by {owner}"
    else:
        whose = "made by nb2flow for no known user"
    mine = f"you are {me}" if me else "outside a notebook pod nb2flow cannot tell who you are"
    if not force:
        raise UsageError(f"{what} is {whose} ({mine}); not going to {verb} it", hint=f"pass --force to {verb} it anyway")
    return f"{verb} {what}, {whose} (--force)"


def ui_link(config: ClusterConfig, namespace: str, name: str, kind: str = "workflows") -> str | None:
    if not config.argo_ui:
        return None
    return f"{config.argo_ui.rstrip('/')}/{kind}/{namespace}/{name}"


def submit(kube: Kube, manifest: dict, secret: dict | None = None) -> dict:
    """Create the Workflow, which must be :func:`argo.named` — asked again safely after a lost answer — and,
    first, its credentials' ``secret`` (:func:`argo.env_secret_manifest`), which it then owns."""
    from .argo import SUBMISSION

    return with_secret(kube, secret, lambda: kube.create("workflows", manifest["metadata"]["namespace"], manifest,
                                                         identity=SUBMISSION))


def with_secret(kube: Kube, secret: dict | None, create) -> dict:
    """Create or update ``secret``, then its owner (``create()``), then make the owner own it: the pods never
    start before the Secret they read exists, a refused owner takes its Secret away with it, and deleting
    the owner deletes the Secret (Kubernetes' garbage collector, by the ownerReference)."""
    if not secret:
        return create()
    ns, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
    kube.put_secret(ns, secret)
    try:
        owner = create()
    except ClusterError as exc:
        if not exc.transient:
            try:
                kube.delete_secret(ns, name)
            except ClusterError:
                pass
        raise
    meta = owner["metadata"]
    kube.patch_secret(ns, name, {"metadata": {"ownerReferences": [
        {"apiVersion": owner.get("apiVersion", "argoproj.io/v1alpha1"), "kind": owner.get("kind"), "name": meta["name"],
         "uid": meta.get("uid", "")}]}})
    return owner


def schedule(kube: Kube, manifest: dict, *, replace_others: bool = False, secret: dict | None = None) -> tuple[dict, bool]:
    """Create the CronWorkflow, or update the one of that name when it is this user's (``replace_others``: also
    one someone else made). Returns (object, created)."""
    from .argo import SUBMISSION, named

    manifest = manifest if SUBMISSION in (manifest["metadata"].get("annotations") or {}) else named(manifest)
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    if secret:
        created = []

        def made() -> dict:
            out, new = schedule(kube, manifest, replace_others=replace_others)
            created.append(new)
            return out

        return with_secret(kube, secret, made), created[0]
    try:
        try:
            made = kube.create("cronworkflows", ns, manifest, identity=SUBMISSION)
            return made, True
        except ClusterConflict:
            pass

        def change(current: dict) -> dict:  # re-checked on every read: the owner may change in between
            other = schedule_owner_conflict(current, manifest)
            if other and not replace_others:
                raise ClusterConflict(f"schedule {name} already exists in namespace {ns}, {other}; not replacing it",
                                      hint="pass --replace to overwrite it, or --name to schedule under another name")
            return dict(manifest)

        made = kube.update("cronworkflows", ns, name, change)
        return made, False
    except ClusterRejected as exc:
        older = single_schedule_form(manifest)
        if older is None or "schedules" not in exc.message:
            raise
        return schedule(kube, older, replace_others=replace_others)  # Argo before v3.6 (Kubeflow Pipelines ships such releases)


def schedule_owner_conflict(current: dict, manifest: dict) -> str | None:
    """Who else made the existing schedule ``current`` (None when it is this user's own nb2flow schedule)."""
    from .argo import MANAGED_BY, NOTEBOOK_LABEL, OWNER_LABEL

    labels = current.get("metadata", {}).get("labels") or {}
    notebook = (current.get("metadata", {}).get("annotations") or {}).get(A.NOTEBOOK_PATH)
    if any(labels.get(k) != v for k, v in MANAGED_BY.items()):
        return "not made by nb2flow"
    mine = manifest["metadata"]["labels"].get(OWNER_LABEL)
    theirs = labels.get(OWNER_LABEL)
    if theirs != mine:
        return f"made by {theirs or 'an unknown user'} for {notebook or labels.get(NOTEBOOK_LABEL, 'another notebook')}"
    return None


def default_schedule_name(stem: str, owner: str | None) -> str:
    """A schedule's name: the notebook's, with its owner's (JupyterHub's username), so two users' notebooks
    called ``analysis`` in one namespace get two schedules."""
    import re

    from .names import CRON_NAME_MAX, k8s_name, short_hash

    if not owner:
        return k8s_name(stem, max_len=CRON_NAME_MAX, unique=True)
    who = re.sub(r"-{3}[0-9a-f]{8}$", "", owner.split("@")[0])  # JupyterHub's escaped name ends in ---HASH
    full = k8s_name(f"{stem}-{who}", max_len=CRON_NAME_MAX, unique=True)
    if len(f"{stem}-{who}") <= CRON_NAME_MAX:
        return full
    # too long: the owner's part is kept whole (up to 20 characters) and the hash covers notebook and owner,
    # so two users' long-named notebooks never share a schedule
    owner_part = k8s_name(who, max_len=999)[:20].rstrip("-")
    tail = f"-{owner_part}-{short_hash(stem + chr(0) + owner)}"
    return k8s_name(stem, max_len=999)[:CRON_NAME_MAX - len(tail)].rstrip("-") + tail


def workflow_from_schedule(cron: dict, scheduled: str) -> dict:
    """A Workflow that runs a schedule now, from the schedule's own spec, as `argo submit --from cronwf/NAME`
    builds it (argo-workflows v4.1.2 workflow/common/convert.go, ConvertCronWorkflowToWorkflow): generateName
    after the schedule, its workflowMetadata, the cron-workflow label, the scheduled-time annotation, and the
    CronWorkflow as its controller owner."""
    import copy

    meta = cron["metadata"]
    spec = cron["spec"]
    wf_meta = spec.get("workflowMetadata") or {}
    labels = dict(wf_meta.get("labels") or {})
    labels[A.ARGO_CRON_LABEL] = meta["name"]
    annotations = {A.ARGO_SCHEDULED_TIME: scheduled, **(wf_meta.get("annotations") or {})}
    return {
        "apiVersion": cron.get("apiVersion", "argoproj.io/v1alpha1"), "kind": "Workflow",
        "metadata": {"generateName": f"{meta['name']}-", "namespace": meta.get("namespace"), "labels": labels,
                     "annotations": annotations,
                     "ownerReferences": [{"apiVersion": cron.get("apiVersion", "argoproj.io/v1alpha1"), "kind": "CronWorkflow",
                                          "name": meta["name"], "uid": meta.get("uid", ""), "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": copy.deepcopy(spec["workflowSpec"]),
    }


def schedule_rows(kube: Kube, namespace: str, now: float | None = None) -> list[dict]:
    """nb2flow's schedules in ``namespace``: cron, time zone, paused or not, the last run and its result, the next run."""
    from datetime import datetime, timezone

    from .cron import next_run

    now = now or time.time()
    rows = []
    for cron in kube.list("cronworkflows", namespace, A.MANAGED_SELECTOR):
        meta, spec, status = cron["metadata"], cron["spec"], cron.get("status") or {}
        schedules = spec.get("schedules") or ([spec["schedule"]] if spec.get("schedule") else [])
        runs = kube.list("workflows", namespace, f"{A.ARGO_CRON_LABEL}={meta['name']}")
        runs.sort(key=lambda w: w["metadata"].get("creationTimestamp") or "")
        last = runs[-1] if runs else None
        suspended = bool(spec.get("suspend"))
        upcoming = [next_run(s, datetime.fromtimestamp(now, timezone.utc), spec.get("timezone")) for s in schedules]
        upcoming = [t for t in upcoming if t is not None]
        notebook = (meta.get("annotations") or {}).get(A.NOTEBOOK_PATH)
        kept = None if last else last_recorded_run(notebook, meta["name"])
        rows.append({
            "name": meta["name"], "notebook": notebook,
            "schedules": schedules, "timezone": spec.get("timezone"), "suspended": suspended,
            "last_run": last["metadata"]["name"] if last else (kept or {}).get("run_id"),
            "last_result": ((last.get("status") or {}).get("phase") or "Pending") if last else (kept or {}).get("state"),
            "last_time": (last["metadata"].get("annotations") or {}).get(A.ARGO_SCHEDULED_TIME) if last
            else status.get("lastScheduledTime"),
            "next_run": None if suspended or not upcoming else min(upcoming).isoformat(),
        })
    return rows


def last_recorded_run(notebook: str | None, schedule_name: str) -> dict | None:
    """The newest run record of a schedule in the notebook's run folders (when reachable here): Argo keeps only
    the last few workflows, the run folders keep every run."""
    from .runs import list_runs

    if not notebook or not os.path.isdir(os.path.dirname(notebook)):
        return None
    runs = [r for r in list_runs([os.path.dirname(notebook)], limit=10_000) if r["run_id"].startswith(schedule_name + "-")]
    return runs[0] if runs else None


def schedule_spec_error(kube: Kube, namespace: str, name: str, wait: float = 1.0) -> str | None:
    """The spec error Argo's cron controller reports on a CronWorkflow it will not run (read back after ``wait``)."""
    time.sleep(wait)
    current = kube.get("cronworkflows", namespace, name)
    for condition in (current.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "SpecError" and str(condition.get("status", "True")) == "True":
            return condition.get("message") or "a spec error"
    return None


def single_schedule_form(manifest: dict) -> dict | None:
    """The CronWorkflow as Argo v3.4 and v3.5 read it: ``spec.schedule``, one string (None: not possible)."""
    spec = manifest["spec"]
    if "schedules" not in spec or len(spec["schedules"]) != 1:
        return None
    older = {k: v for k, v in spec.items() if k != "schedules"}
    return dict(manifest, spec={"schedule": spec["schedules"][0], **older})


def step_views(workflow: dict) -> list[StepView]:
    """One view per DAG task, from the workflow's nodes (:func:`live_views` adds what the pods and run folder say)."""
    nodes = workflow_nodes(workflow)
    tasks = []
    for t in (workflow.get("spec", {}).get("templates") or []):
        if t.get("name") == workflow.get("spec", {}).get("entrypoint") and "dag" in t:
            tasks = [task["name"] for task in t["dag"].get("tasks", [])]
    by_name: dict[str, dict] = {}
    for node in nodes.values():
        name = node.get("displayName")
        if name in tasks and node.get("type") in ("Pod", "Retry", "Skipped", "Suspend"):
            if name not in by_name or node.get("type") == "Retry":
                by_name[name] = node
    views = []
    now = time.time()
    for task in tasks:
        node = by_name.get(task)
        if node is None:
            views.append(StepView(task, StepState.PENDING))
            continue
        state = ARGO_PHASES.get(node.get("phase"), StepState.PENDING)
        started, finished = parse_timestamp(node.get("startedAt")), parse_timestamp(node.get("finishedAt"))
        elapsed = ((finished or now) - started) if started else None
        attempts = max(1, len(node.get("children") or []) if node.get("type") == "Retry" else 1)
        # why it failed, or why it waits (Argo copies the scheduler's "Unschedulable: 0/5 nodes ..." and quota refusals)
        note = node.get("message") if state in (StepState.FAILED, StepState.PENDING) else None
        views.append(StepView(task, state, None, None, elapsed, attempts, note))
    return views


#: Container waiting reasons that mean the pod will not start without a change (kubelet's words).
STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "CrashLoopBackOff")
#: Warning events that say why a pod waits: the scheduler's, the attach/detach controller's, the kubelet's.
WAITING_EVENTS = ("FailedScheduling", "FailedAttachVolume", "FailedMount", "Failed", "FailedCreatePodSandBox", "BackOff")


def pod_waiting_reason(pod: dict, events: list) -> str | None:
    """Why a pending pod waits, in the words of the component that holds it back (None: nothing known)."""
    status = pod.get("status") or {}
    for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return f"{waiting['reason']}: {waiting.get('message') or c.get('image', '')}".rstrip(": ")
    warnings = [e for e in events if e.get("type") == "Warning" and e.get("reason") in WAITING_EVENTS]
    if warnings:
        last = warnings[-1]
        return f"{last['reason']}: {last.get('message', '')}".rstrip(": ")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message', '')}".rstrip(": ")
    return None


def _pod_task(pod: dict, nodes: dict) -> str:
    ann = pod.get("metadata", {}).get("annotations") or {}
    node = nodes.get(ann.get(A.ARGO_NODE_ID, ""), {})
    display = node.get("displayName") or ann.get(A.ARGO_NODE_NAME, "").split(".", 1)[-1]
    if display.endswith(".onExit") or display == "onExit":
        return "onExit"  # the exit handler's pod: the final task that writes the record
    return display.split("(", 1)[0]


def waiting_reasons(kube: Kube, namespace: str, workflow: dict, **policy) -> dict:
    """task -> why its pod waits, for the workflow's pending pods (pod conditions, container states, events)."""
    nodes = workflow_nodes(workflow)
    out = {}
    for pod in kube.list_pods(namespace, f"{A.ARGO_WORKFLOW_LABEL}={workflow['metadata']['name']}", **policy):
        if (pod.get("status") or {}).get("phase", "Pending") != "Pending":
            continue
        events = kube.pod_events(namespace, pod["metadata"]["name"], **policy)
        reason = pod_waiting_reason(pod, events)
        if reason:
            out[_pod_task(pod, nodes)] = reason
    return out


def run_layout(workflow: dict, run_dir: str | None = None):
    """The workflow's run folder and bundle (RunLayout, BundleLayout) when reachable here: ``run_dir`` (the run
    folder as this machine sees the volume), else the pod's paths (inside the notebook's pod). None otherwise."""
    from .runner.protocol import BundleLayout, RunLayout

    ann = (workflow.get("metadata") or {}).get("annotations") or {}
    notebook = ann.get(A.NOTEBOOK_PATH)
    if not notebook:
        return None
    pod_folder = posixpath.dirname(notebook)
    bundle = ann.get(A.BUNDLE, "")
    if run_dir:
        layout = RunLayout(run_dir)
        bundle = os.path.join(layout.notebook_folder, posixpath.relpath(bundle, pod_folder)) if bundle else ""
    else:
        layout = RunLayout(posixpath.join(pod_folder, RUNS_DIR, workflow["metadata"]["name"]))
    if not os.path.isdir(layout.root):
        return None
    return layout, BundleLayout(bundle)


def current_cells(workflow: dict, run_dir: str | None = None) -> dict:
    """task -> (cell number, its first line) each running step is at, read from the run folder's status files."""
    found = run_layout(workflow, run_dir)
    if found is None:
        return {}
    layout, bundle = found
    try:
        with open(bundle.source, encoding="utf-8") as fh:
            lines = {c["number"]: (c["source"].strip().splitlines() or [""])[0][:60] for c in json.load(fh)["cells"]}
    except (OSError, ValueError, KeyError):
        lines = {}
    out = {}
    for task in os.listdir(layout.steps_root) if os.path.isdir(layout.steps_root) else []:
        try:
            with open(layout.status(task), encoding="utf-8") as fh:
                cell = json.load(fh).get("cell")
        except (OSError, ValueError):
            continue
        if cell:
            out[task] = (cell, lines.get(cell))
    return out


NO_CONTROLLER_AFTER = 60.0  # seconds a submitted workflow may go without a word from Argo's controller


def controller_silence(workflow: dict, now: float | None = None) -> float | None:
    """Seconds since the workflow was created with no status from Argo's workflow controller, once past
    :data:`NO_CONTROLLER_AFTER` (None: the controller has acted, or it is early)."""
    if (workflow.get("status") or {}).get("phase"):
        return None
    created = parse_timestamp((workflow.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return None
    waited = (now or time.time()) - created
    return waited if waited >= NO_CONTROLLER_AFTER else None


def no_controller_error(namespace: str, name: str, waited: float):
    from .errors import ClusterError

    return ClusterError(f"workflow {name} has had no word from Argo's workflow controller for {int(waited)}s",
                        hint=f"is Argo's workflow controller running, and watching namespace {namespace}? "
                             f"(`kubectl get pods -A -l app=workflow-controller`; its --namespaced / managed namespaces)")


def live_views(kube: Kube, namespace: str, workflow: dict, run_dir: str | None = None, **policy) -> list[StepView]:
    """The steps as the cluster sees them now, with why pending ones wait and, where the run folder is
    reachable (``run_dir``, or the pod's own paths), the cell each running step is at."""
    views = step_views(workflow)
    reasons = waiting_reasons(kube, namespace, workflow, **policy) if any(v.state is StepState.PENDING for v in views) else {}
    cells = current_cells(workflow, run_dir) if any(v.state is StepState.RUNNING for v in views) else {}
    out = []
    for v in views:
        if v.state is StepState.PENDING and v.name in reasons:  # the pod's own word before Argo's node message
            v = replace(v, note=reasons[v.name])
        elif v.state is StepState.RUNNING and v.name in cells:
            v = replace(v, cell=cells[v.name][0], first_line=cells[v.name][1])
        out.append(v)
    return out


class ApiTrouble:
    """A spell of failed reads while watching: what failed how often (``500 ×3``), since when."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.counts: dict[str, int] = {}
        self.attempt = 0

    def add(self, exc) -> None:
        self.since = self.since or time.monotonic()
        key = str(exc.http_status) if exc.http_status else "no answer"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.attempt += 1

    def summary(self) -> str:
        return ", ".join(f"{k} ×{n}" for k, n in self.counts.items())

    def lasted(self) -> float:
        return time.monotonic() - self.since if self.since else 0.0


def watch(kube: Kube, namespace: str, name: str, *, progress: str = "auto", interval: float = 2.0,
          give_up_after: float | None = None, run_dir: str | None = None) -> dict:
    """Follow a workflow until it finishes. Each read has the policy's timeouts; a spell of 429s, 5xx, timeouts
    or dropped connections is ridden out with backoff ("the API server is struggling (500 ×3), still watching")
    for up to ``give_up_after`` seconds (the ``api_retry_for`` setting); only a lasting failure ends the watch,
    naming the command that resumes it. The workflow itself is never touched."""
    reporter = make_reporter(progress)
    workflow: dict | None = None
    give_up = kube.policy.retry_for if give_up_after is None else give_up_after
    trouble = ApiTrouble()
    try:
        while True:
            try:
                workflow = kube.get("workflows", namespace, name, retry_for=0)
            except ClusterError as exc:
                if not exc.transient:
                    raise
                trouble.add(exc)
                if trouble.lasted() >= give_up:
                    raise ClusterError(f"stopped watching workflow {name}: the API server has failed for {int(trouble.lasted())}s "
                                       f"({trouble.summary()}; last: {exc.message})",
                                       hint=f"the workflow goes on in the cluster; `nb2flow status --watch {name}` watches it again") from None
                reporter.message(f"the API server is struggling ({trouble.summary()}), still watching")
                time.sleep(min(kube.policy.delay(trouble.attempt - 1, getattr(exc, "retry_after", None)),
                               max(0.05, give_up - trouble.lasted())))
                continue
            if trouble.since is not None:
                reporter.message(f"the API server answers again after {int(trouble.lasted())}s ({trouble.summary()})")
                trouble = ApiTrouble()
            try:
                views = live_views(kube, namespace, workflow, run_dir, retry_for=0)
            except ClusterError as exc:
                if not exc.transient:
                    raise
                views = step_views(workflow)  # the pods' word can wait for the next round
            if not reporter.started:
                reporter.start(name, f"{namespace}/{name}", views)
            reporter.update(views)
            if (workflow.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Error"):
                return workflow
            waited = controller_silence(workflow)
            if waited is not None:
                raise no_controller_error(namespace, name, waited)
            time.sleep(interval)
    finally:
        if workflow is not None and reporter.started:
            reporter.finish(step_views(workflow))


def find_step_pods(kube: Kube, namespace: str, workflow: dict, step: str | None) -> list[tuple[str, str]]:
    """(step, pod name) for the workflow's pods, by the workflow label and the node annotations."""
    name = workflow["metadata"]["name"]
    nodes = workflow_nodes(workflow)
    pods = kube.list_pods(namespace, f"{A.ARGO_WORKFLOW_LABEL}={name}")
    out = []
    for pod in pods:
        task = _pod_task(pod, nodes)
        if step is None or task == step:
            out.append((task, pod["metadata"]["name"]))
    return sorted(out, key=lambda x: (x[0], x[1]))


def run_folder_logs(workflow: dict, step: str | None) -> tuple[str, list] | None:
    """(run folder, [(task, output.log text)]) of a workflow whose pods are gone, when its run folder is
    reachable here (inside the notebook's pod, or where the volume is mounted); None otherwise."""
    found = run_layout(workflow)
    if found is None:
        return None
    from .runs import step_logs

    layout = found[0]
    try:
        tasks = sorted(os.listdir(layout.steps_root))
    except OSError:
        return None
    out = step_logs(layout.root, [t for t in tasks if step is None or t == step])
    return (layout.root, out) if out else None


def rbac_manifests(namespace: str, service_account: str, runner: str | None = None) -> list[dict]:
    """The Role and RoleBinding the notebook's service account needs (to submit), and those of the account Argo's
    executor runs as in step pods (``runner``: the ``executor_service_account`` setting; the steps' own
    containers get no token): only reporting results, workflowtaskresults create and patch."""
    from .names import k8s_name

    rules = [
        {"apiGroups": ["argoproj.io"], "resources": ["workflows", "cronworkflows"],
         "verbs": ["create", "get", "list", "watch", "patch", "update", "delete"]},
        # each run's (and schedule's) Secret of the notebook's credentials, owned by its Workflow or CronWorkflow
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "update", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]},
    ]
    docs = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "nb2flow-submitter", "namespace": namespace, "labels": dict(A.MANAGED_BY)},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": k8s_name(f"nb2flow-submitter-{service_account}", max_len=63, unique=True), "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "nb2flow-submitter"},
         "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "nb2flow-runner", "namespace": namespace, "labels": dict(A.MANAGED_BY)},
         "rules": [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": k8s_name(f"nb2flow-runner-{runner or service_account}", max_len=63, unique=True),
                      "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "nb2flow-runner"},
         "subjects": [{"kind": "ServiceAccount", "name": runner or service_account, "namespace": namespace}]},
        # Step pods are as isolated as the notebook: no ingress, and no cloud metadata endpoint (Zero-to-JupyterHub
        # blocks it for notebook pods with an init container that nb2flow rightly does not copy; its singleuser
        # NetworkPolicy does not select step pods)
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "nb2flow-steps", "namespace": namespace, "labels": dict(A.MANAGED_BY)},
         "spec": {"podSelector": {"matchLabels": dict(A.MANAGED_BY)},
                  "policyTypes": ["Ingress", "Egress"], "ingress": [],
                  "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]},
                             {"to": [{"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}}]}]}},
    ]
    return docs
