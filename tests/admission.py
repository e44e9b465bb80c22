"""What a real API server checks when an object is created or replaced (admission), for the test
server: metadata names, generateName, label and annotation keys and values, and - with Argo's
CRDs from ../shared - strict field validation. Each rule follows Kubernetes' own
(k8s.io/apimachinery pkg/api/validation/objectmeta.go, pkg/util/validation/validation.go)."""

from __future__ import annotations

import functools
import json
import re

from helpers import SHARED

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # IsDNS1123Label, at most 63
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # at most 253
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")  # IsQualifiedName's name part, at most 63
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # IsValidLabelValue, at most 63
TOTAL_ANNOTATION_SIZE = 256 * 1024  # ValidateAnnotationsSize


def name_problems(name: str) -> list:
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return [f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower case "
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"]
    return []


def generate_name_problems(prefix: str) -> list:
    """generateName gets 5 random characters; the result must be a valid name (ValidateObjectMeta)."""
    return [p.replace("metadata.name", "metadata.generateName") for p in name_problems(prefix + "abcde")]


def key_problems(field: str, key: str) -> list:
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        problems.append(f"{field}: Invalid value: {key!r}: prefix part must be a lowercase RFC 1123 subdomain")
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        problems.append(f"{field}: Invalid value: {key!r}: name part must consist of alphanumeric characters, '-', '_' or '.', "
                        "and must start and end with an alphanumeric character (at most 63)")
    return problems


def meta_problems(meta: dict, path: str = "metadata") -> list:
    problems = []
    if meta.get("name"):
        problems += name_problems(meta["name"])
    elif meta.get("generateName"):
        problems += generate_name_problems(meta["generateName"])
    for key, value in (meta.get("labels") or {}).items():
        problems += key_problems(f"{path}.labels", key)
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(f"{path}.labels: Invalid value: {value!r}: a valid label must be an empty string or consist of "
                            "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)")
    annotations = meta.get("annotations") or {}
    for key in annotations:
        problems += key_problems(f"{path}.annotations", key)
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > TOTAL_ANNOTATION_SIZE:
        problems.append(f"{path}.annotations: Too long: must have at most {TOTAL_ANNOTATION_SIZE} bytes")
    return problems


def strict(schema):
    """The CRD schema as ``fieldValidation=Strict`` applies it: unknown fields are errors,
    except where the CRD preserves them (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crd_validator(plural: str):
    """A validator of Argo v4.1.2's full CRD for ``plural``, strict; None where ../shared is absent."""
    path = SHARED / "schemas" / f"argoproj.io_{plural}.yaml"
    if not path.is_file():
        return None
    import jsonschema
    import yaml

    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return jsonschema.Draft4Validator(strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))


def field_problems(plural: str, body: dict, strict_fields: bool) -> tuple[list, list]:
    """(unknown fields, invalid values) of a custom object, as the API server reports them."""
    validator = crd_validator(plural)
    if validator is None:
        return [], []
    unknown, invalid = [], []
    for e in validator.iter_errors(json.loads(json.dumps(body))):
        where = ".".join(str(p) for p in e.path)
        if e.validator == "additionalProperties":
            extra = re.findall(r"'([^']+)' was unexpected", e.message)
            unknown += [f"{where + '.' if where else ''}{x}" for x in extra]
        else:
            invalid.append({"field": where, "message": e.message})
    return (unknown if strict_fields else []), invalid
