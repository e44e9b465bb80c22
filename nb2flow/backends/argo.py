"""The ``argo`` backend: a run is an Argo Workflow whose pods reuse the notebook pod's image and volumes.

Submission (:func:`nb2flow.cluster.prepare`, :func:`nb2flow.cluster.submit`), the live view and the
watch loop live in :mod:`nb2flow.cluster`; this module puts them behind the backend interface and
keeps the run record: written before the request (``Submitting``), completed with the workflow's uid,
replaced by the workflow's final task with the outcome.
"""

from __future__ import annotations

import json
import os

from ..errors import ClusterError, StepFailed, UsageError
from . import Backend, Console, Outcome, Report, RunRef, RunRequest, StepRow, Where, folder_logs, record_report, refuse_ended


def kube_for(where: Where, console: Console):
    """(client, namespace) for ``where``: the flags, nb2flow.yaml, then this pod's or the kubeconfig's."""
    from ..config import load_config
    from ..kube import ApiPolicy, Kube

    config = load_config(None).with_flags(namespace=where.namespace, context=where.context)
    kube = Kube(context=config.context, policy=ApiPolicy.from_config(config), notice=console.notice)
    return kube, config.namespace or kube.default_namespace


def target_for(notebook: str, where: Where, console: Console, *, need_kube: bool = False):
    """The pod settings, namespace and client a notebook's workflow is built for (:class:`nb2flow.cluster.Target`)."""
    from ..cluster import resolve_target
    from ..config import load_config

    config = load_config(notebook).with_flags(namespace=where.namespace, context=where.context, workdir=where.workdir)
    for warning in config.warnings:
        console.notice(f"warning: {warning}")
    target = resolve_target(notebook, config, pod_spec=where.pod_spec, from_pod=where.from_pod, need_kube=need_kube,
                            notice=console.notice)
    for warning in target.pod.warnings:
        console.notice(warning)
    return target


def run_where(ref: RunRef, where: Where) -> Where:
    """``where``, in the namespace the run's record names when no -n is given."""
    recorded = ((ref.record or {}).get("workflow") or {}).get("namespace")
    return where if where.namespace or not recorded else Where(namespace=recorded, context=where.context)


def own(kube, ns: str, plural: str, name: str, verb: str, force: bool, console: Console) -> dict:
    """The object, once it is known to be the user's own (or ``--force``); see :func:`nb2flow.cluster.check_owner`."""
    from ..cluster import check_owner

    obj = kube.get(plural, ns, name)
    said = check_owner(kube, obj, what=f"{'schedule' if plural == 'cronworkflows' else 'workflow'} {name}", verb=verb, force=force)
    if said:
        console.notice(said)
    return obj


class ArgoBackend(Backend):
    name = "argo"
    title = "submitting to Argo Workflows"

    def validate(self, request: RunRequest) -> None:
        if request.reuse:
            raise UsageError("--reuse is for local runs; on Argo, `nb2flow run --resume RUN` re-runs only what changed")
        if request.python:
            raise UsageError("--python names an interpreter on this machine; step pods run `python:` from nb2flow.yaml (default python3)")

    # ------------------------------------------------------------------ a run
    def start(self, request: RunRequest, console: Console) -> Outcome:
        from ..argo import env_secret_manifest, named
        from ..cluster import check_step_files_reach_pods, prepare, prepare_resume, secret_values, submit, ui_link

        pipeline = request.pipeline
        target = target_for(pipeline.path, request.where, console, need_kube=True)
        check_step_files_reach_pods(target, submitting=True)
        manifest, _ = prepare(pipeline, target, request.parameters, mode=request.mode, fail_fast=request.fail_fast,
                              parallelism=request.jobs)
        earlier = request.resume.record if request.resume else None
        if earlier:
            manifest, kept = prepare_resume(pipeline, target, manifest, request.resume.run_dir, earlier, request.parameters,
                                            request.mode)
            if manifest is None:
                console.notice(f"nothing to re-run: every step of {earlier['run_id']} succeeded and is unchanged")
                return Outcome(run_id=earlier["run_id"], run_dir=request.resume.run_dir, state="succeeded")
            others = [s.name for s in pipeline.steps if s.name not in kept]
            console.notice(f"resuming {earlier['run_id']}: reusing {', '.join(kept) or 'no step'} (saved values); "
                           f"running {', '.join(others)}")
        manifest = named(manifest)
        name = manifest["metadata"]["name"]
        link = ui_link(target.config, target.namespace, name)
        resumed = earlier["run_id"] if earlier else None
        # the record first: a submission whose answer is lost still has one, under the name nb2flow chose
        run_dir = record_submission(pipeline, manifest, request.mode, link, target.local_dir, console, resumed=resumed)
        try:
            created = submit(target.kube, manifest, env_secret_manifest(manifest, secret_values(target)))
        except ClusterError as exc:
            if exc.transient:  # not known whether it was created: the record stays, and says how to find out
                raise ClusterError(f"{exc.message}; workflow {name} may or may not have been created",
                                   hint=f"`nb2flow status {name}` tells; its record is in {os.path.relpath(run_dir)}") from None
            forget_submission(run_dir)
            raise
        record_submission(pipeline, created, request.mode, link, target.local_dir, console, resumed=resumed)
        console.say(f"workflow {name} submitted in namespace {target.namespace}")
        console.emit("submitted", workflow=name, namespace=target.namespace, run_dir=os.path.abspath(run_dir))
        if link:
            console.say(f"  {link}")
        console.result(name)
        if not request.watch:
            return Outcome(run_id=name, run_dir=run_dir, state="submitted")
        return watch_to_end(target.kube, target.namespace, name, console, progress=request.progress, run_dir=run_dir)

    def follow(self, ref: RunRef, where: Where, console: Console) -> Outcome:
        workflow = (ref.record or {}).get("workflow") or {}
        if ref.record is not None and ref.record.get("state") != "running":
            return Outcome(run_id=ref.run_id, run_dir=ref.run_dir, state=ref.record.get("state"),
                           output_notebook=ref.record.get("output_notebook"), visible_notebook=ref.record.get("visible_notebook"))
        kube, ns = kube_for(run_where(ref, where), console)
        return watch_to_end(kube, ns, workflow.get("name", ref.run_id), console, progress="auto", run_dir=ref.run_dir)

    # ------------------------------------------------------------------ reading runs
    def lookup(self, name: str, where: Where, console: Console) -> RunRef | None:
        from ..errors import ClusterNotFound

        try:
            kube, ns = kube_for(where, console)
            kube.get("workflows", ns, name)
        except ClusterNotFound:
            return None
        except ClusterError as exc:
            raise UsageError(exc.message) from None
        return RunRef(run_id=name, backend=self.name)

    def status(self, ref: RunRef, where: Where, console: Console) -> Report:
        record = ref.record
        if record is not None and record.get("state") != "running":
            return record_report(ref)
        workflow = (record or {}).get("workflow") or {}
        try:  # a record written at submission: the cluster knows more
            return self._live(workflow.get("name", ref.run_id), Where(namespace=workflow.get("namespace") or where.namespace,
                                                                      context=where.context), console, ref.run_dir)
        except (ClusterError, UsageError) as exc:
            if record is None:
                raise
            console.notice(f"the cluster cannot say how workflow {ref.run_id} goes ({exc.render()}); showing its run folder")
            return record_report(ref)

    def _live(self, name: str, where: Where, console: Console, run_dir: str | None) -> Report:
        from ..cluster import controller_silence, live_views, no_controller_error
        from ..runs import format_duration

        kube, ns = kube_for(where, console)
        workflow = kube.get("workflows", ns, name)
        status = workflow.get("status") or {}
        rows = []
        for v in live_views(kube, ns, workflow, run_dir):
            detail = v.note or (f"cell {v.cell}: {v.first_line}" if v.cell else "")
            rows.append(StepRow(v.name, v.state.label, str(v.attempt), format_duration(v.elapsed), detail[:160]))
        notes = []
        waited = controller_silence(workflow)
        if waited is not None:
            notes.append(f"nb2flow: {no_controller_error(ns, name, waited).render()}")
        return Report(headline=f"workflow {name}: {status.get('phase', 'Pending')} (namespace {ns})", steps=tuple(rows),
                      notes=tuple(notes), data=workflow)

    def logs(self, ref: RunRef, step, follow, where: Where, console: Console):
        """The step pods' logs (``-f``: as they come, several pods interleaved); once the pods are gone, the
        cells' output as the run folder on the shared volume keeps it."""
        from ..cluster import find_step_pods, run_folder_logs

        if ref.record is not None and ref.record.get("state") != "running":  # ended: its folder has it all
            yield from folder_logs(ref, step, console)
            return
        kube, ns = kube_for(run_where(ref, where), console)
        workflow = kube.get("workflows", ns, ref.run_id)
        pods = find_step_pods(kube, ns, workflow, step)
        if not pods:
            kept = run_folder_logs(workflow, step)
            if kept is None:
                raise UsageError(f"no pods for {'step ' + step + ' of ' if step else ''}workflow {ref.run_id} (yet, or already cleaned up)",
                                 hint="executed notebooks and logs stay in the run folder on the shared volume")
            console.notice(f"the pods are gone; the cells' output as kept in {os.path.relpath(kept[0])}")
            for task, text in kept[1]:
                yield (task if len(kept[1]) > 1 else None), text
            return
        prefix = len(pods) > 1
        if follow and prefix:
            yield from _interleaved(kube, ns, pods)
            return
        for task, pod in pods:
            out = kube.pod_log(ns, pod, follow=follow)
            for text in ([out] if isinstance(out, str) else out):
                yield (task if prefix else None), text

    def stop(self, ref: RunRef, force: bool, where: Where, console: Console) -> str:
        refuse_ended(ref, "stop")
        kube, ns = kube_for(run_where(ref, where), console)
        own(kube, ns, "workflows", ref.run_id, "stop", force, console)
        kube.patch("workflows", ns, ref.run_id, {"spec": {"shutdown": "Stop"}})
        return f"workflow {ref.run_id} stopping"

    def delete(self, ref: RunRef, force: bool, where: Where, console: Console) -> str:
        kube, ns = kube_for(run_where(ref, where), console)
        own(kube, ns, "workflows", ref.run_id, "delete", force, console)
        kube.delete("workflows", ns, ref.run_id)
        return f"workflow {ref.run_id} deleted"

    def list_state(self, record: dict) -> str:
        return f"argo {record.get('state')}"

    def more_runs(self, where: Where, asked: bool | None, known: dict, console: Console) -> list[dict]:
        """Workflows and schedules nb2flow made, as run-like rows; nothing unless asked for (``--cluster``, ``-n``)
        or inside a pod with credentials. A run folder's record written at submission takes the workflow's state."""
        from ..argo import MANAGED_SELECTOR, NOTEBOOK_PATH
        from ..incluster import in_cluster
        from ..runner.record import parse_timestamp

        if asked is False or (asked is None and not where.namespace and not in_cluster()):
            return []
        try:
            kube, ns = kube_for(where, console)
            rows = []
            for wf in kube.list("workflows", ns, MANAGED_SELECTOR):
                st = wf.get("status") or {}
                phase = {"Error": "failed"}.get(st.get("phase"), st.get("phase", "Pending").lower())
                rows.append({"run_id": wf["metadata"]["name"], "notebook": (wf["metadata"].get("annotations") or {}).get(NOTEBOOK_PATH, "?"),
                             "state": f"argo {phase}", "started": parse_timestamp(st.get("startedAt")),
                             "ended": parse_timestamp(st.get("finishedAt"))})
            for cw in kube.list("cronworkflows", ns, MANAGED_SELECTOR):
                rows.append({"run_id": cw["metadata"]["name"], "notebook": (cw["metadata"].get("annotations") or {}).get(NOTEBOOK_PATH, "?"),
                             "state": "schedule " + ", ".join(cw["spec"].get("schedules") or []), "started": None, "ended": None})
        except (ClusterError, UsageError) as exc:
            if asked:
                raise
            console.notice(f"workflows not listed: {exc.render()}")
            return []
        extra = []
        for row in rows:
            mine = known.get(row["run_id"])
            if mine is None:
                extra.append(row)
            elif mine["state"] == "argo running":  # its folder has only the record written at submission
                mine.update(state=row["state"], started=row["started"] or mine.get("started"), ended=row["ended"])
        return extra


def _interleaved(kube, ns: str, pods):
    """Several pods' followed logs, their lines as they come."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()
    done = object()

    def pump(task, pod):
        try:
            for line in kube.pod_log(ns, pod, follow=True):
                lines.put((task, line))
        finally:
            lines.put(done)

    for pair in pods:
        threading.Thread(target=pump, args=pair, daemon=True).start()
    left = len(pods)
    while left:
        item = lines.get()
        if item is done:
            left -= 1
        else:
            yield item


def watch_to_end(kube, namespace: str, name: str, console: Console, *, progress, run_dir: str | None = None) -> Outcome:
    """Watch a workflow to its end (``run --watch``, ``status --watch``); the outcome's failure reflects it."""
    from ..cluster import watch as watch_workflow
    from ..runner.protocol import RunLayout
    from ..runs import read_record

    final = watch_workflow(kube, namespace, name, progress=progress, run_dir=run_dir)
    phase = final.get("status", {}).get("phase")
    console.say(f"workflow {name}: {phase}")
    record = read_record(run_dir) if run_dir and os.path.exists(RunLayout(run_dir).record) else {}
    failure = None
    if phase != "Succeeded":
        failure = StepFailed(f"workflow {name} ended {phase}: {final.get('status', {}).get('message', '')}".rstrip(": "),
                             hint=f"nb2flow logs {name}")
    state = record.get("state") if record.get("state") not in (None, "running") else ("succeeded" if phase == "Succeeded" else "failed")
    outcome = Outcome(run_id=name, run_dir=run_dir and os.path.abspath(run_dir), state=state,
                      output_notebook=record.get("output_notebook"), visible_notebook=record.get("visible_notebook"),
                      failure=failure)
    from ..events import run_finished

    console.send(run_finished(outcome))
    return outcome


def record_submission(pipeline, manifest: dict, mode: str, link, folder: str, console: Console, resumed=None) -> str:
    """The run's record (``running``) before the Workflow is sent, completed with its uid once created, so
    ``list`` and ``status`` find it in the run folder at once — also after a lost answer; the workflow's
    final task replaces it with the outcome."""
    import time

    from .. import __version__
    from ..runner.protocol import RunLayout
    from ..runner.record import new_record
    from ..runner.protocol import runs_root
    from ..runs import read_record, write_record

    meta = manifest["metadata"]
    from ..runner.params import from_wire

    params = {p["name"]: from_wire(json.loads(p["value"])) for p in (manifest["spec"].get("arguments") or {}).get("parameters") or []}
    record = new_record(run_id=meta["name"], notebook=os.path.abspath(pipeline.path), sha256=pipeline.notebook.sha256,
                        version=__version__, python=None, mode=mode, jobs=manifest["spec"].get("parallelism"), parameters=params,
                        started=time.time(), resumed=resumed or False, backend="argo")
    record["workflow"] = {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                          "phase": "Pending" if meta.get("uid") else "Submitting", **({"ui": link} if link else {})}
    run_dir = os.path.join(runs_root(folder), meta["name"])
    try:
        path = RunLayout(run_dir).record
        if not os.path.exists(path) or (read_record(run_dir).get("workflow") or {}).get("phase") == "Submitting":
            write_record(run_dir, record)  # never over the final task's record
    except (OSError, ValueError) as exc:
        console.notice(f"warning: cannot write the run's record in {run_dir}: {exc}")
    return run_dir


def forget_submission(run_dir: str) -> None:
    """The record written before a submission the API server refused: nothing was created."""
    from ..runner.auth import SIG_SUFFIX
    from ..runner.files import unlink
    from ..runner.protocol import RunLayout

    unlink(RunLayout(run_dir).record)
    unlink(RunLayout(run_dir).record + SIG_SUFFIX)
    try:
        os.rmdir(run_dir)  # a resume's folder keeps the steps it had copied in
    except OSError:
        pass
