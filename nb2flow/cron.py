"""Cron schedules as Argo reads them: what it refuses, and when one runs next.

Argo validates a CronWorkflow's schedules with robfig/cron v3's ParseStandard and runs them with
the same library; :func:`cron_problem` refuses what it refuses, :func:`next_run` says when a
schedule fires next (for ``nb2flow schedules``), in the schedule's time zone.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone


# Argo validates a CronWorkflow's schedules with robfig/cron v3's ParseStandard
# (argoproj/argo-workflows workflow/validate/validate.go, ValidateCronWorkflow): five fields,
# `*`/`?`, ranges, lists, steps, month and weekday names, the @descriptors and CRON_TZ=/TZ=;
# no seconds field, no L, W or #. And the v4 CRD's pattern for spec.schedules admits no
# CRON_TZ= prefix and @every with Go units only (manifests/base/crds/full/argoproj.io_cronworkflows.yaml).
CRON_FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("day of month", 1, 31, None),
               ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
               ("day of week", 0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def cron_problem(spec: str) -> str | None:
    """Why Argo's cron parser refuses ``spec`` (None when it accepts it)."""
    text = spec.strip()
    if text.startswith(("CRON_TZ=", "TZ=")):  # robfig reads it; the v4 CRD's pattern for schedules does not
        return "a time zone prefix is not accepted in schedules; use --timezone"
    if text.startswith("@"):
        if text in CRON_DESCRIPTORS:
            return None
        if text.startswith("@every ") and re.fullmatch(r"([0-9]+(ns|us|µs|ms|s|m|h))+", text[7:].strip()):
            return None  # the CRD's pattern: Go duration units, no days
        return f"{text.split()[0] if text.startswith('@every') is False else text!r} is not @yearly, @monthly, @weekly, @daily, @hourly or @every DURATION (e.g. @every 6h)"
    fields = text.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields (minute hour day-of-month month day-of-week), found {len(fields)}"
    for value, (what, low, high, names) in zip(fields, CRON_FIELDS):
        for part in value.lower().split(","):
            problem = _cron_part_problem(part, low, high, names)
            if problem:
                return f"{what} {value!r}: {problem}"
    return None


def _cron_part_problem(part: str, low: int, high: int, names) -> str | None:
    span, _, step = part.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return f"step {step!r} must be a positive number"
    if span in ("*", "?"):
        return None
    bounds = span.split("-")
    if len(bounds) > 2 or not all(bounds):
        return f"{span!r} is not a number, a name or a range"
    values = []
    for b in bounds:
        if b.isdigit():
            values.append(int(b))
        elif names and b in names:
            values.append(names.index(b) + (low if low else 0))
        else:
            return f"{b!r} is not a number{' or a name' if names else ''} (L, W and # are not supported)"
    if any(v < low or v > high for v in values):
        return f"{span!r} is outside {low}-{high}"
    if len(values) == 2 and values[0] > values[1]:
        return f"range {span!r} runs backwards"
    return None


DESCRIPTOR_FIELDS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
                     "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def _values(field: str, low: int, high: int, names) -> tuple[set, bool]:
    """The values a field matches, and whether it is a star (robfig's starBit: ``*`` or ``?`` with no step > 1)."""
    out, star = set(), False
    for part in field.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span in ("*", "?"):
            start, end = low, high
            star = star or step == 1
        else:
            bounds = [names.index(b) + low if names and b in names else int(b) for b in span.split("-")]
            start, end = bounds[0], bounds[-1] if len(bounds) == 2 or not step_text else high
        out.update(range(start, end + 1, step))
    return out, star


def next_run(spec: str, after: datetime, tz: str | None = None) -> datetime | None:
    """When ``spec`` fires next after ``after`` (an aware time), in time zone ``tz`` (default UTC); None for
    ``@every`` (it counts from the last run) or a schedule that never fires (31 February)."""
    text = DESCRIPTOR_FIELDS.get(spec.strip(), spec.strip())
    if cron_problem(text) or text.startswith("@"):
        return None
    zone = timezone.utc
    if tz:
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(tz)
    fields = [_values(f, low, high, names) for f, (_, low, high, names) in zip(text.split(), CRON_FIELDS)]
    (minutes, _), (hours, _), (doms, dom_star), (months, _), (dows, dow_star) = fields
    dows = {d % 7 for d in dows}
    start = after.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = start.date()
    for _ in range(366 * 5):
        if day.month in months:
            dom_ok, dow_ok = day.day in doms, (day.isoweekday() % 7) in dows
            if (dom_ok and dow_ok) if (dom_star or dow_star) else (dom_ok or dow_ok):
                for hour in sorted(hours):
                    for minute in sorted(minutes):
                        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                        if candidate >= start:
                            return candidate
        day += timedelta(days=1)
    return None
