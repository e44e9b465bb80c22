"""Every name nb2flow makes from a user's text: Kubernetes names, label values, folder names.

One function, :func:`k8s_name`, makes each Kubernetes name nb2flow emits (Workflow
``generateName``, CronWorkflow name, Argo task names) as a lowercase DNS-1123 label within the
limit the object needs; :func:`label_value` makes label values and :func:`file_slug` the names
of run and bundle folders. Text with nothing ASCII in it (``한글 분석``) becomes
``notebook-<hash of the text>``, never an empty or invalid name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

#: Longest names, from the API server's and Argo's rules: a label value or DNS-1123 label is
#: at most 63 characters; ``generateName`` gets 5 random characters appended; a CronWorkflow's
#: runs are named ``<name>-<10-digit time>`` and label their pods with it, so it is at most 52.
LABEL_MAX = 63
GENERATE_NAME_MAX = LABEL_MAX - 5
CRON_NAME_MAX = 52


def short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def _ascii(text: str) -> str:
    """Accents dropped (``é`` → ``e``), full-width forms folded; other non-ASCII removed."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def k8s_name(text: str, *, max_len: int = LABEL_MAX, fallback: str = "notebook", letter_first: bool = False,
             unique: bool = False) -> str:
    """A lowercase DNS-1123 label made from ``text``, at most ``max_len`` characters.

    ``letter_first`` makes it start with a letter (Argo refuses DAG task names that start with
    a digit); ``unique`` appends a short hash of ``text`` when it had to be changed, so two
    different texts never give one name (``My Analysis`` and ``my-analysis``).
    """
    name = re.sub(r"[^a-z0-9]+", "-", _ascii(text).lower()).strip("-")
    changed = name != text
    if not re.search(r"[a-z]", name):
        name = f"{fallback}-{name}" if name else fallback
        changed = True
    elif letter_first and not name[0].isalpha():
        name = f"{fallback}-{name}"
    # a name cut short always carries a hash of the whole text: two long names that share their first
    # characters (…-v1, …-v2) never become one
    suffix = f"-{short_hash(text)}" if (unique and changed) or name == fallback or len(name) > max_len else ""
    name = name[:max_len - len(suffix)].rstrip("-") + suffix
    return name


def label_value(text: str) -> str:
    """A valid label value: at most 63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", _ascii(text)).strip("-_.")
    if not re.search(r"[A-Za-z0-9]", value):
        return f"x-{short_hash(text)}"
    if len(value) > LABEL_MAX:
        value = value[:LABEL_MAX - 7].rstrip("-_.") + f"-{short_hash(text)}"
    return value


def file_slug(text: str, max_len: int = 60) -> str:
    """A folder-name form of a notebook's name: ``[A-Za-z0-9._-]``, no leading or trailing ``-``/``.``."""
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", _ascii(text))).strip("-.")
    if not slug:
        return f"notebook-{short_hash(text)}"
    return slug[:max_len].rstrip("-.")
