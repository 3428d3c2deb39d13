"""``%kale_run --schedule CRON``: the schedule a recurring run is created with, checked before anything
is uploaded.

Kubeflow Pipelines parses a recurring run's cron with robfig/cron's ``Parse``: six fields, seconds first
(``0 0 2 * * *`` is 02:00 daily), or a descriptor (``@daily``, ``@every 1h30m``).  Given a classic
five-field crontab line, robfig would read its first field as seconds — ``0 2 * * *`` would fire at
minute 2 of every hour — so a five-field expression is converted (``0`` seconds prepended) and the
conversion is said.  The next fire times ``%kale_schedules`` shows are computed here from the same
fields, in UTC as the ScheduledWorkflow controller does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .errors import KaleError

MAX_CONCURRENCY = 10  # the API server refuses more (recurring_run_server.go: "Support 1-10")
DESCRIPTORS = {"@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
               "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *",
               "@hourly": "0 0 * * * *"}
_FIELDS = (("second", 0, 59, {}), ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
           ("month", 1, 12, {m: i for i, m in enumerate(
               "jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}),
           ("day of week", 0, 6, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}))
_EVERY = re.compile(r"@every\s+((\d+(\.\d+)?(h|m|s|ms))+)")


@dataclass(frozen=True)
class Schedule:
    """What ``--schedule`` and its options ask for, checked."""

    cron: str  # KFP's six-field form (or a descriptor)
    given: str  # as the user wrote it
    max_concurrency: int = 1
    start: datetime | None = None  # timezone-aware
    end: datetime | None = None
    catchup: bool = True  # KFP's default: runs missed while paused or late are started

    @property
    def converted(self) -> bool:
        return self.cron != self.given

    def note(self) -> str:
        """The conversion of a five-field cron, said where the schedule is created."""
        if not self.converted:
            return ""
        return (f"the five-field cron '{self.given}' is '{self.cron}' in KFP's six-field form (seconds first)")


def parse_schedule(cron: str, max_concurrency: int | None = None, start: str | None = None,
                   end: str | None = None, catchup: bool = True) -> Schedule:
    """A :class:`Schedule`, or a KaleError naming the option and the fix."""
    six = six_fields(cron)
    concurrency = 1 if max_concurrency is None else max_concurrency
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise KaleError(f"--max-concurrency {concurrency}: Kubeflow Pipelines runs 1 to {MAX_CONCURRENCY} runs "
                        "of a schedule at once; give a number in that range.")
    begin, finish = _instant("--start", start), _instant("--end", end)
    if begin and finish and finish <= begin:
        raise KaleError(f"--end {end} is not after --start {start}; the schedule would never fire.")
    return Schedule(six, cron.strip(), concurrency, begin, finish, catchup)


def six_fields(cron: str) -> str:
    """KFP's form of ``cron``: six fields or a descriptor; five fields get ``0`` seconds."""
    text = " ".join(cron.split())
    if text.startswith("@"):
        if text.lower() in DESCRIPTORS or _EVERY.fullmatch(text):
            return text
        raise KaleError(f"--schedule {cron!r}: unknown descriptor; use one of {', '.join(DESCRIPTORS)} or "
                        "'@every 1h30m', or a cron expression such as '0 0 2 * * *' (02:00 daily).")
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise KaleError(f"--schedule {cron!r} has {len(fields)} fields; KFP's cron has six, seconds first "
                        "(second minute hour day-of-month month day-of-week, e.g. '0 0 2 * * *' for 02:00 daily), "
                        "and a five-field crontab line is converted.")
    for value, spec in zip(fields, _FIELDS):
        _values(value, spec, cron)
    return " ".join(fields)


def _values(text: str, spec, cron: str) -> set[int]:
    """The numbers a field matches (robfig's grammar: lists of ranges or * or ?, each with an optional /step)."""
    name, low, high, names = spec
    out: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|\?|[0-9a-zA-Z]+(?:-[0-9a-zA-Z]+)?)(?:/(\d+))?", part)
        if not match or (match.group(1) == "?" and name not in ("day of month", "day of week")):
            raise KaleError(f"--schedule {cron!r}: '{part}' is not a valid {name} field; use numbers {low}-{high}, "
                            "ranges a-b, lists a,b, '*' and steps '*/n'.")
        span, step = match.group(1), int(match.group(2) or 1)
        if span in ("*", "?"):
            first, last = low, high
        else:
            first_text, _, last_text = span.partition("-")
            first = _number(first_text, spec, cron)
            last = _number(last_text, spec, cron) if last_text else (high if match.group(2) else first)
        if step < 1 or first > last:
            raise KaleError(f"--schedule {cron!r}: '{part}' in the {name} field matches nothing.")
        out.update(range(first, last + 1, step))
    return out


def _number(text: str, spec, cron: str) -> int:
    name, low, high, names = spec
    value = names.get(text.lower()) if not text.isdigit() else int(text)
    if value is None or not low <= value <= high:
        raise KaleError(f"--schedule {cron!r}: '{text}' is out of range for the {name} field ({low}-{high}).")
    return value


def _instant(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise KaleError(f"{option} {text!r} is not an ISO 8601 time; write e.g. 2026-12-24T02:00 or "
                        "2026-12-24T02:00:00+01:00 (without an offset: this machine's time zone).") from None
    return value.astimezone() if value.tzinfo is None else value


def next_fire(cron: str, after: datetime) -> datetime | None:
    """The first time after ``after`` (UTC) that ``cron`` (six fields or a descriptor) fires; None within 5 years."""
    cron = DESCRIPTORS.get(cron.lower(), cron)
    every = _EVERY.fullmatch(cron)
    if every:
        units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
        seconds = sum(float(n) * units[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ms|h|m|s)", every.group(1)))
        return after + timedelta(seconds=seconds)
    sets = [_values(f, spec, cron) for f, spec in zip(cron.split(), _FIELDS)]
    seconds, minutes, hours, days, months, weekdays = sets
    dom_star, dow_star = cron.split()[3] in ("*", "?"), cron.split()[5] in ("*", "?")
    day = after.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start = after.astimezone(timezone.utc)
    for _ in range(5 * 366):
        weekday = (day.weekday() + 1) % 7  # cron counts Sunday as 0
        # cron's rule: with both day fields restricted, either one matching is enough
        if dom_star or dow_star:
            day_ok = day.day in days and weekday in weekdays
        else:
            day_ok = day.day in days or weekday in weekdays
        if day.month in months and day_ok:
            for h in sorted(hours):
                for m in sorted(minutes):
                    for s in sorted(seconds):
                        moment = day.replace(hour=h, minute=m, second=s)
                        if moment > start:
                            return moment
        day += timedelta(days=1)
    return None


def crontab_line(schedule: Schedule, folder, notebook_name: str, params: dict[str, str]) -> str:
    """The crontab line that runs the notebook with ``kale-magic run`` on this machine on the same schedule."""
    import shlex

    cron = DESCRIPTORS.get(schedule.cron.lower(), schedule.cron)
    if cron.startswith("@every"):  # crontab has no intervals: every N minutes (at least one)
        start = datetime(2000, 1, 1, tzinfo=timezone.utc)
        minutes = max(1, round((next_fire(cron, start) - start).total_seconds() / 60))
        when = f"*/{minutes} * * * *" if minutes < 60 else f"0 */{max(1, minutes // 60)} * * *"
    else:
        when = " ".join(cron.split()[1:]).replace("?", "*")  # crontab fires on the minute: no seconds
    args = "".join(f" --param {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    return f"{when} cd {shlex.quote(str(folder))} && kale-magic run {shlex.quote(notebook_name)}{args}"
