"""Argo's own validation rules that its CRD does not express, ported as a checker: one function per
rule, each citing the Argo source it follows: argoproj/argo-workflows at tag v4.1.2,
workflow/validate/validate.go (line numbers at that tag). The same rules run in the workflow
controller before a workflow's first pod, so a workflow that breaks one fails at once with "Error".
Every manifest the tests produce goes through :func:`workflow_problems`."""

from __future__ import annotations

import json
import re

from nb2flow.argo import cron_problem

# validate.go:1711-1720 workflowFieldNameFmt, workflowFieldMaxLength (isValidWorkflowFieldName)
WORKFLOW_FIELD_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
WORKFLOW_FIELD_MAX = 128
# validate.go:1691 paramOrArtifactNameRegex (isValidParamOrArtifactName)
PARAM_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
# Go's time.ParseDuration, which the controller applies to a template's timeout
# (workflow/controller/operator.go:2682 -> pkg/apis/workflow/v1alpha1/utils.go:9 ParseStringToDuration)
GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
PLACEHOLDER = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
# global variables every workflow has (validate.go: newTemplateValidationCtx, and :262 workflow.status);
# workflow.failures only when the workflow has an exit handler (:299)
GLOBALS = {"workflow.name", "workflow.namespace", "workflow.uid", "workflow.serviceAccountName", "workflow.creationTimestamp",
           "workflow.priority", "workflow.mainEntrypoint", "workflow.duration", "workflow.status"}
# resolved at run time, accepted by prefix (validate.go:821-825 resolveAllVariables)
RUNTIME_PREFIXES = ("workflow.creationTimestamp", "workflow.scheduledTime", "workflow.duration", "workflow.labels.",
                    "workflow.annotations.")
CRON_NAME_MAX = 52  # validate.go:105 maxCharsInCronWorkflowName


def check_field_names(templates: list) -> list:
    """validate.go:1350 validateWorkflowFieldNames (of spec.templates, and of each DAG's tasks): unique
    (:1391), non-empty, workflowFieldNameRegex, at most 128 characters."""
    problems = []
    groups = [("spec.templates", templates)]
    groups += [(f"templates.{t['name']}.tasks", t["dag"]["tasks"]) for t in templates if "dag" in t]
    for where, items in groups:
        seen = set()
        for i, item in enumerate(items):
            name = item.get("name", "")
            if not name:
                problems.append(f"{where}[{i}].name is required")
            elif len(name) > WORKFLOW_FIELD_MAX or not WORKFLOW_FIELD_NAME.match(name):
                problems.append(f"{where}[{i}].name: '{name}' is invalid")
            elif name in seen:
                problems.append(f"{where}[{i}].name '{name}' is not unique")
            seen.add(name)
    return problems


def check_task_names_and_dependencies(templates: list) -> list:
    """validate.go:1433 validateDAG: no task name that begins with a digit when dependencies are used
    (:1469), every dependency defined (:1500), no cycle (:1625 verifyNoCycles)."""
    problems = []
    for t in templates:
        if "dag" not in t:
            continue
        tasks = {task["name"]: task for task in t["dag"]["tasks"]}
        using = any(task.get("dependencies") or task.get("depends") for task in tasks.values())
        for name, task in tasks.items():
            if using and name[:1].isdigit():
                problems.append(f"templates.{t['name']}.tasks.{name} name cannot begin with a digit when using either 'depends' or 'dependencies'")
            for dep in task.get("dependencies") or []:
                if dep not in tasks:
                    problems.append(f"templates.{t['name']}.tasks.{name} dependency '{dep}' not defined")
        state: dict = {}

        def visit(name, path):
            if state.get(name) == "done":
                return
            if state.get(name) == "open":
                problems.append(f"templates.{t['name']} dependency cycle detected: {' -> '.join(path + [name])}")
                return
            state[name] = "open"
            for dep in tasks.get(name, {}).get("dependencies") or []:
                if dep in tasks:
                    visit(dep, path + [name])
            state[name] = "done"

        for name in tasks:
            visit(name, [])
    return problems


def check_parameter_names(spec: dict) -> list:
    """validate.go:993 validateArguments (and validateInputs): parameter names match
    paramOrArtifactNameRegex, and a workflow argument has a value."""
    problems = []
    for i, p in enumerate((spec.get("arguments") or {}).get("parameters") or []):
        if not PARAM_NAME.match(p.get("name", "")):
            problems.append(f"spec.arguments.parameters[{i}].name: '{p.get('name')}' is invalid: Parameter/Artifact name must "
                            "consist of alpha-numeric characters, '_' or '-'")
        if "value" not in p and "valueFrom" not in p:
            problems.append(f"spec.arguments.parameters.{p.get('name')}.value is required")
    for t in spec.get("templates") or []:
        for p in (t.get("inputs") or {}).get("parameters") or []:
            if not PARAM_NAME.match(p.get("name", "")):
                problems.append(f"templates.{t['name']}.inputs.parameters.{p.get('name')} is invalid")
    return problems


def check_durations(templates: list) -> list:
    """validate.go:562-570 validateTemplate: a timeout only on leaf templates, not a bare number; and the
    controller's time.ParseDuration (Go units, no days)."""
    problems = []
    for t in templates:
        timeout = t.get("timeout")
        if timeout is None:
            continue
        if "dag" in t or "steps" in t:
            problems.append(f"{'dag' if 'dag' in t else 'steps'} template doesn't support timeout field.")
        elif str(timeout).isdigit():
            problems.append(f"{t['name']} has invalid duration format in timeout.")
        elif not PLACEHOLDER.search(str(timeout)) and not GO_DURATION.match(str(timeout)):
            problems.append(f"templates.{t['name']}.timeout {timeout!r}: time: unknown unit in duration")
    return problems


def check_references(spec: dict) -> list:
    """validate.go:855 validateLeaf -> :797 resolveAllVariables: every {{...}} in a leaf template resolves
    to an input, a workflow parameter or a global; every task's template exists; the entrypoint exists."""
    problems = []
    names = {t["name"] for t in spec.get("templates") or []}
    if spec.get("entrypoint") not in names:
        problems.append(f"spec.entrypoint template '{spec.get('entrypoint')}' undefined")
    if spec.get("onExit") and spec["onExit"] not in names:  # validate.go:287-297 validateTemplateHolder
        problems.append(f"spec.onExit template '{spec['onExit']}' undefined")
    params = {f"workflow.parameters.{p['name']}" for p in (spec.get("arguments") or {}).get("parameters") or []}
    params |= {"workflow.failures"} if spec.get("onExit") else set()
    for t in spec.get("templates") or []:
        if "dag" in t:
            for task in t["dag"]["tasks"]:
                if task.get("template") not in names:
                    problems.append(f"templates.{t['name']}.tasks.{task['name']} template '{task.get('template')}' undefined")
                declared = {p["name"] for p in (next((x for x in spec["templates"] if x["name"] == task.get("template")), {})
                                               .get("inputs") or {}).get("parameters") or []}
                given = {p["name"] for p in (task.get("arguments") or {}).get("parameters") or []}
                for missing in sorted(declared - given):
                    problems.append(f"templates.{t['name']}.tasks.{task['name']} inputs.parameters.{missing} was not supplied")
            continue
        scope = GLOBALS | params | {f"inputs.parameters.{p['name']}" for p in (t.get("inputs") or {}).get("parameters") or []}
        scope |= {"pod.name"} | ({"retries"} if t.get("retryStrategy") else set())
        text = json.dumps(t)  # validateLeaf resolves every {{...}} in the whole template (resolveAllVariables)
        for ref in PLACEHOLDER.findall(text):
            if ref not in scope and not ref.startswith(RUNTIME_PREFIXES):
                problems.append(f"templates.{t['name']}: failed to resolve {{{{{ref}}}}}")
    return problems


def check_executor_account(spec: dict) -> list:
    """validate.go validateLeaf, at its end: a leaf template whose automountServiceAccountToken is false (its own,
    else the workflow's) needs an executor.serviceAccountName (its own, else the workflow's), "templates.%s.executor
    .serviceAccountName must not be empty if automountServiceAccountToken is false"; the controller's
    workflowpod.go (setupServiceAccount) then mounts that account's token in the executor's containers only."""
    problems = []
    for t in spec.get("templates") or []:
        if "container" not in t and "script" not in t:
            continue
        automount = t.get("automountServiceAccountToken", spec.get("automountServiceAccountToken"))
        executor = (t.get("executor") or {}).get("serviceAccountName") or (spec.get("executor") or {}).get("serviceAccountName")
        if automount is False and not executor:
            problems.append(f"templates.{t['name']}.executor.serviceAccountName must not be empty if automountServiceAccountToken is false")
    return problems


def check_cron(cron: dict) -> list:
    """validate.go ValidateCronWorkflow: the name at most 52 characters, every schedule parses with
    robfig/cron's ParseStandard (:449)."""
    problems = []
    name = cron["metadata"].get("name", "")
    if len(name) > CRON_NAME_MAX:
        problems.append(f"cron workflow name {name!r} must not be more than 52 characters long (currently {len(name)})")
    spec = cron["spec"]
    for schedule in spec.get("schedules") or ([spec["schedule"]] if spec.get("schedule") else []):
        problem = cron_problem(schedule)
        if problem:
            problems.append(f"cron schedule {schedule} is malformed: {problem}")
    if not (spec.get("schedules") or spec.get("schedule")):
        problems.append("cron workflow must have at least one schedule")
    return problems


def workflow_problems(manifest: dict) -> list:
    """Everything above, for a Workflow or a CronWorkflow (its workflowSpec)."""
    if manifest["kind"] == "CronWorkflow":
        return check_cron(manifest) + workflow_problems({"kind": "Workflow", "spec": manifest["spec"]["workflowSpec"]})
    spec = manifest["spec"]
    templates = spec.get("templates") or []
    return (check_field_names(templates) + check_task_names_and_dependencies(templates) + check_parameter_names(spec)
            + check_durations(templates) + check_references(spec) + check_executor_account(spec))
