"""The end of an Argo run: its record, merged notebook and HTML, and the notification.

Argo runs it as the workflow's exit handler (``spec.onExit``), whatever the outcome: succeeded,
failed or stopped. It reads what the steps left in the run folder (each ``status.json``, each
executed notebook) and what Argo says about the steps whose pods ended without a word
(``{{workflow.failures}}``: killed for memory, deadline, image pull, stop), and writes
``run.json`` in the local run's schema, ``<stem>.out.ipynb`` and, where nbconvert is in the
image, ``<stem>.out.html``; the merged notebook (and HTML) also beside the notebook, in
``nb2flow-runs/``. Standard library only (nbconvert optional).
"""

from __future__ import annotations

import json
import os
import sys
import time

from .files import make_private_dirs
from .auth import Untrusted, take_key, verified_json
from .files import write_json
from .merge import write_html, write_merged, write_merged_jobs
from .params import read_params
from .protocol import BundleLayout, RunLayout, StepState, error_line, finalize_arg_parser, step_error
from .record import RunState, new_record, parse_timestamp, step_entry, step_fingerprint

NOTIFY_ENV = "NB2FLOW_NOTIFY_URL"  # set from a Secret (valueFrom.secretKeyRef) on the final pod only
STOPPED = "Stopped with strategy"  # Argo's node message for the steps `argo stop` / `nb2flow stop` ended


def argo_failures(text: str | None) -> dict:
    """``{{workflow.failures}}`` (a JSON list of failed nodes) as task -> its last failed node."""
    try:
        nodes = json.loads(text or "[]") or []
    except ValueError:
        return {}
    out: dict = {}
    for node in nodes if isinstance(nodes, list) else []:
        task = str(node.get("displayName", "")).split("(", 1)[0]  # a retry's attempts are "train(0)", "train(1)"
        if task and (node.get("podName") or task not in out):
            out[task] = node
    return out


def step_outcome(status: dict | None, failure: dict | None) -> tuple[StepState, dict | None]:
    """A step's state and error, from its ``status.json`` and Argo's word on its node."""
    message = (failure or {}).get("message") or ""
    if status is not None:
        state = StepState.parse(status.get("state", ""))
        if state.finished:
            return state, status.get("error")
    elif failure is None:
        return StepState.SKIPPED, None  # never started: a parent failed, or the run was stopped first
    cell = (status or {}).get("cell")
    # the pod ended while the step ran (or before it started): Argo's node message says why
    if STOPPED in message:
        return StepState.CANCELLED, None
    if "OOMKilled" in message:
        return StepState.KERNEL_DIED, step_error(cell, "OOMKilled", f"out of memory ({message})",
                                                 hint="ask for more with a memory: tag on the step's first cell")
    if "deadline" in message.lower():
        return StepState.TIMED_OUT, step_error(cell, "Timeout", message)
    why = message or "its pod ended before the step did"
    return StepState.FAILED, step_error(cell, "PodFailed", why)


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def build_record(pipeline: dict, run: RunLayout, *, run_id: str, notebook: str, parameters: dict, failures: dict,
                 created: float | None, workflow: dict) -> dict:
    """The run record of a finished Argo run, from the bundle's ``pipeline.json``, the run folder and Argo's failures."""
    record = new_record(run_id=run_id, notebook=notebook, sha256=pipeline.get("sha256", ""),
                        version=pipeline.get("nb2flow_version", ""), python=sys.executable, mode=pipeline.get("mode", "notebook"),
                        jobs=None, parameters=parameters, started=created, resumed=False, backend="argo")
    steps = {}
    for s in pipeline.get("steps", []):
        task = s["task"]
        status = _read_json(run.status(task))
        state, error = step_outcome(status, failures.get(task))
        status = status or {}
        started, ended = status.get("started"), status.get("ended")
        if state.finished and not ended and status:
            ended = time.time()
        steps[s["name"]] = step_entry(task=task, state=state, attempts=status.get("attempt", 1 if status else 0),
                                      started=started, go_time=status.get("running_since"), ended=ended,
                                      exit_code=None, error=error, fingerprint=step_fingerprint(s["fingerprint"], parameters),
                                      reused=state is StepState.REUSED, cell=None)
    states = [StepState.parse(e["state"]) for e in steps.values()]
    if all(s.ok for s in states):
        outcome = RunState.SUCCEEDED
    elif any(s is StepState.CANCELLED for s in states) and not any(s.failed for s in states):
        outcome = RunState.INTERRUPTED
    else:
        outcome = RunState.FAILED
    submitted = _read_json(run.record) or {}  # the record written at submission (a resume says which run it completes)
    record.update(steps=steps, state=outcome.value, ended=time.time(), workflow=workflow, resumed=submitted.get("resumed", False))
    if not record["started"]:
        record["started"] = min((e["started"] for e in steps.values() if e["started"]), default=None)
    return record


def first_failure(record: dict) -> tuple[str, dict] | None:
    for name, entry in record["steps"].items():
        if StepState.parse(entry["state"]).failed:
            return name, entry.get("error") or {}
    return None


def summary(record: dict) -> str:
    """One line saying how the run ended (the notification's text, the final pod's log)."""
    text = f"nb2flow run {record['run_id']} of {os.path.basename(record['notebook'])}: {record['state']}"
    failed = first_failure(record)
    if failed:
        name, error = failed
        text += "; " + error_line(name, error.get("cell"), error.get("ename", "Error"), error.get("evalue", ""))
    return text


def notify(url: str, record: dict, link: str | None, timeout: float = 10.0) -> str | None:
    """POST the outcome as JSON to the webhook; ``text`` makes it readable in Slack and Teams. Returns the
    problem (never the URL, which is a secret), or None."""
    import urllib.error
    import urllib.request

    failed = first_failure(record)
    body = {
        "text": summary(record) + (f" ({link})" if link else ""),
        "run": record["run_id"], "notebook": record["notebook"], "state": record["state"],
        "failed_step": failed[0] if failed else None,
        "cell": (failed[1].get("cell") if failed else None),
        "error": (f"{failed[1].get('ename')}: {failed[1].get('evalue')}" if failed else None),
        "merged_notebook": record.get("visible_notebook") or record.get("output_notebook"),
        "html": record.get("visible_html") or record.get("html"),
        "argo_ui": link,
    }
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return None
    except urllib.error.HTTPError as exc:
        return f"the webhook answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"the webhook could not be reached ({type(exc).__name__})"


def finalize(argv=None) -> int:
    """``nb2flow_step.py --finalize ...`` (see :func:`protocol.finalize_command`)."""
    args = finalize_arg_parser().parse_args(argv)
    bundle, run = BundleLayout(os.path.abspath(args.bundle)), RunLayout(os.path.abspath(args.run_dir))
    parameters = read_params(None, args.param)
    take_key()
    try:  # what the merged notebook is made of and which steps there are: only as nb2flow wrote them
        source = verified_json(bundle.source) if os.path.exists(bundle.source) else {}
        pipeline = verified_json(bundle.pipeline) if os.path.exists(bundle.pipeline) else {}
    except Untrusted as exc:
        print(exc, file=sys.stderr, flush=True)
        return 2
    folder = os.path.abspath(args.cwd or os.getcwd())
    notebook = os.path.join(folder, os.path.basename(pipeline.get("notebook", source.get("stem", "notebook") + ".ipynb")))
    workflow = {"name": args.workflow, "namespace": args.namespace, "uid": args.uid, "phase": args.phase}
    if args.ui_link:
        workflow["ui"] = args.ui_link
    make_private_dirs(run.root)
    record = build_record(pipeline, run, run_id=os.path.basename(run.root), notebook=notebook, parameters=parameters,
                          failures=argo_failures(args.failures), created=parse_timestamp(args.created), workflow=workflow)
    if pipeline.get("jobs"):  # a pipeline of several notebooks and scripts: a merged notebook per notebook job
        merged = write_merged_jobs(bundle, pipeline, run.root, parameters, folder=folder, run_id=record["run_id"])
        for problem in merged.pop("problems"):
            print(f"nb2flow: warning: {problem}", file=sys.stderr)
        record.update(merged)
        if record["output_notebook"] and args.html:
            record.update(write_html(record["output_notebook"], record["visible_notebook"]))
    elif source:
        written = write_merged(source, [s["task"] for s in pipeline.get("steps", [])], run.root, parameters,
                               notebook_folder=folder, run_id=record["run_id"])
        record.update(output_notebook=written["output_notebook"], visible_notebook=written["visible_notebook"])
        if written.get("problem"):
            print(f"nb2flow: warning: {written['problem']}", file=sys.stderr)
        if written["output_notebook"] and args.html:
            record.update(write_html(written["output_notebook"], written["visible_notebook"]))
    url = os.environ.get(NOTIFY_ENV)
    if url and (args.notify_on == "always" or record["state"] != RunState.SUCCEEDED.value):
        problem = notify(url, record, args.ui_link)
        record["notified"] = problem or "sent"
        if problem:
            print(f"nb2flow: warning: the notification was not sent: {problem}", file=sys.stderr)
    write_json(run.record, record, sort_keys=False, signed=True)
    print(summary(record), flush=True)
    for key in ("visible_notebook", "visible_html", "html_skipped"):
        if record.get(key):
            print(f"  {key.replace('_', ' ')}: {record[key]}", flush=True)
    return 0
