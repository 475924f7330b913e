"""The strict output format of a generated week and its parser.

One event per line, as the paper's `[weekday, timestamp, location, intent]`:

    [2, 14:30, Convenience Store, Shop & Service]

weekday 0 (Monday) .. 6, time HH:MM (24 h) within that day of the target week, location and
intent from the dataset's vocabulary (the intent one that location allows). A name holding a
separator (`,` `[` `]`), a quote, a line break or edge spaces is written JSON-quoted:
`[5, 21:00, "Bar, Karaoke", Nightlife Spot]`. Structured-output
endpoints get the same content as JSON (`{"events": [[2, "14:30", "...", "..."], ...]}`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pandas as pd

from bgen_assets.domain import MINUTES_PER_DAY
from bgen_assets.llm import EventVocabulary

_NAME = r'"(?:[^"\\]|\\.)*"|[^,\[\]"]+?'  # JSON-quoted, or plain
LINE = re.compile(rf"^\[\s*(?P<weekday>-?\d+)\s*,\s*(?P<hour>\d{{1,2}}):(?P<minute>\d{{2}})\s*,\s*(?P<location>{_NAME})\s*,"
                  rf"\s*(?P<intent>{_NAME})\s*\]$")
_NEEDS_QUOTES = frozenset(',[]"\n\r')


def line_name(name: str) -> str:
    """A location or intent as a line writes it: as it is, or JSON-quoted where it could not be read back."""
    plain = name and name == name.strip() and not (_NEEDS_QUOTES & set(name))
    return name if plain else json.dumps(name, ensure_ascii=False)


def _read_name(written: str) -> str:
    return json.loads(written) if written.startswith('"') else written


def render_line(weekday: int, ts: pd.Timestamp, location: str, intent: str) -> str:
    return f"[{weekday}, {ts:%H:%M}, {line_name(location)}, {line_name(intent)}]"


def render_events(events: pd.DataFrame) -> str:
    return "\n".join(render_line(r.weekday, r.ts, r.location, r.intent) for r in events.itertuples())


def render_json_objects(events: pd.DataFrame) -> str:
    """The naive alternative the benchmark compares against: one JSON object per event."""
    return json.dumps({"events": [
        {"weekday": int(r.weekday), "time": f"{r.ts:%H:%M}", "location": r.location, "intent": r.intent}
        for r in events.itertuples()
    ]})


def json_schema(vocabulary: EventVocabulary) -> dict:
    """JSON schema of a week for endpoints with structured output (events as 4-tuples)."""
    return {
        "type": "object",
        "properties": {"events": {"type": "array", "minItems": 1, "items": {
            "type": "array", "minItems": 4, "maxItems": 4,
            "prefixItems": [
                {"type": "integer", "minimum": 0, "maximum": 6},
                {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
                {"type": "string", "enum": vocabulary.locations},
                {"type": "string", "enum": vocabulary.intents},
            ],
        }}},
        "required": ["events"],
        "additionalProperties": False,
    }


@dataclass
class ParsedWeek:
    events: pd.DataFrame                      # weekday, minute_of_day, location, intent (valid lines only)
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors and len(self.events) > 0


def _lines_of(text: str) -> list[str]:
    """Event lines from plain text, or from the JSON form (structured output)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            rows = json.loads(stripped)["events"]
            return [f"[{r[0]}, {r[1]}, {line_name(r[2])}, {line_name(r[3])}]" for r in rows]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return [f"<unparsable JSON answer: {exc}>"]
    return [line.strip() for line in stripped.splitlines() if line.strip()]


def _parse_lines(text: str, vocabulary: EventVocabulary) -> tuple[list[tuple], list[str]]:
    """Valid events in answer order, and an error per invalid line (naming the line)."""
    rows, errors = [], []
    for number, line in enumerate(_lines_of(text), start=1):
        match = LINE.match(line)
        if not match:
            errors.append(f"line {number}: not of the form [weekday, HH:MM, location, intent]: {line[:80]!r}")
            continue
        weekday, hour, minute = int(match["weekday"]), int(match["hour"]), int(match["minute"])
        try:
            location, intent = _read_name(match["location"]), _read_name(match["intent"])
        except ValueError:
            errors.append(f"line {number}: a quoted name that is not valid JSON: {line[:80]!r}")
            continue
        if not 0 <= weekday <= 6:
            errors.append(f"line {number}: weekday {weekday} is not in 0-6")
        elif hour > 23 or minute > 59:
            errors.append(f"line {number}: {hour:02d}:{minute:02d} is not a time of day")
        elif location not in vocabulary.intents_by_location:
            errors.append(f"line {number}: unknown location {location!r}")
        elif intent not in vocabulary.intents_by_location[location]:
            errors.append(f"line {number}: intent {intent!r} is not one of {location!r}'s")
        else:
            rows.append((weekday, hour * 60 + minute, location, intent))
    return rows, errors


def _week(rows: list[tuple], errors: list[str]) -> ParsedWeek:
    if not rows and not errors:
        errors = [*errors, "no events"]
    events = pd.DataFrame(rows, columns=["weekday", "minute_of_day", "location", "intent"])
    return ParsedWeek(events.sort_values(["weekday", "minute_of_day"], kind="stable", ignore_index=True), errors)


def parse_week(text: str, vocabulary: EventVocabulary) -> ParsedWeek:
    """Every line must be a valid event; errors name the line. Events come back sorted by time."""
    return _week(*_parse_lines(text, vocabulary))


def parse_weeks(text: str, vocabulary: EventVocabulary, n_weeks: int) -> list[ParsedWeek]:
    """A multi-week answer (no segmentation): weeks follow each other in time order, so a new
    week starts where the weekday and time go back. Exactly `n_weeks` weeks are expected."""
    rows, errors = _parse_lines(text, vocabulary)
    weeks: list[list[tuple]] = [[]]
    for row in rows:
        if weeks[-1] and row[:2] < weeks[-1][-1][:2]:
            weeks.append([])
        weeks[-1].append(row)
    if len(weeks) != n_weeks:
        errors = [*errors, f"{len(weeks) if rows else 0} week(s) instead of {n_weeks}"]
    weeks += [[] for _ in range(n_weeks - len(weeks))]
    return [_week(week, errors) for week in weeks[:n_weeks]]


def to_events(parsed: pd.DataFrame, target_monday: pd.Timestamp, slot_minutes: int) -> pd.DataFrame:
    """Parsed lines as synthetic events of the week starting `target_monday`."""
    minutes = parsed["weekday"].astype("int64") * MINUTES_PER_DAY + parsed["minute_of_day"].astype("int64")
    return pd.DataFrame({
        "ts": target_monday + pd.to_timedelta(minutes, unit="min"),
        "weekday": parsed["weekday"].astype("int64"),
        "time_slot": (parsed["minute_of_day"] // slot_minutes).astype("int64"),
        "location": parsed["location"],
        "intent": parsed["intent"],
    })
