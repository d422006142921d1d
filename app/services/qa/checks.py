"""The machine's checks on a call's transcript: forbidden and required words (the SMS sensitive-word
engine's Matcher, so full-width forms and symbols inserted between characters still match), the longest
silence and the agent's speech rate.

A transcript is a JSON list of {"speaker": "agent"|"customer", "start": s, "end": s, "text": "..."}.
Keywords are looked for in the agent's segments. Silence and speech rate need timings on every segment;
without them (or without a transcript at all) the item is "not checked" and scores nothing.

`machine_results` is JSON {item_id: {"kind", "checked", "passed", "points", "hits", "value", "note",
"spans": {segment index: [[start, end], ...]}}}; spans index the ORIGINAL text, for highlighting.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from app.models.qa import (
    CHECK_FORBIDDEN,
    CHECK_MANUAL,
    CHECK_REQUIRED,
    CHECK_SILENCE,
    CHECK_SPEECH_RATE,
    QaCheckItem,
)
from app.models.sms import MASK
from app.services.qa.scoring import item_points, keyword_lines, total
from app.services.sms.words import MASK_CHAR, Matcher, normalise

AGENT = "agent"
_CACHE_MAX = 512


@dataclass(frozen=True)
class Segment:
    speaker: str | None
    start: float | None
    end: float | None
    text: str


def parse_transcript(raw: str | list | None) -> list[Segment] | None:
    """Segments of a stored transcript; None when there is none or it is not a list of segments."""
    if raw in (None, ""):
        return None
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    out = []
    for row in data:
        if not isinstance(row, dict):
            continue

        def num(key, row=row):
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            return float(value)

        out.append(Segment(row.get("speaker"), num("start"), num("end"), str(row.get("text") or "")))
    return out


def has_timings(segments: list[Segment]) -> bool:
    return bool(segments) and all(s.start is not None and s.end is not None and s.end >= s.start
                                  for s in segments)


# --- keyword matchers, cached per item version --------------------------------------------------------
_matchers: dict[tuple[int, object], Matcher] = {}
_lock = threading.Lock()


def item_matcher(item: QaCheckItem) -> Matcher:
    """A Matcher over the item's keywords (all marked "mask", so a check shows where each hit lies),
    cached by item id and updated_at: editing the item builds a new one."""
    key = (item.id, item.updated_at)
    found = _matchers.get(key) if item.id is not None else None
    if found is not None:
        return found
    words = [w for line in keyword_lines(item.keywords) for w in line]
    built = Matcher([(w, MASK, False) for w in words])
    if item.id is not None:
        with _lock:
            if len(_matchers) >= _CACHE_MAX:
                _matchers.clear()
            _matchers[key] = built
    return built


def _spans(original: str, masked: str) -> list[list[int]]:
    """[start, end) runs of characters the matcher masked (the hits) in `original`."""
    spans: list[list[int]] = []
    for i, (a, b) in enumerate(zip(original, masked, strict=False)):
        if a != b and b == MASK_CHAR:
            # the matcher leaves spaces inside a hit unmasked: one hit stays one span
            if spans and not original[spans[-1][1]:i].strip():
                spans[-1][1] = i + 1
            else:
                spans.append([i, i + 1])
    return spans


def _agent_segments(segments: list[Segment]) -> list[tuple[int, Segment]]:
    return [(i, s) for i, s in enumerate(segments) if (s.speaker or AGENT) == AGENT]


def _keywords(item: QaCheckItem, segments: list[Segment]) -> dict:
    matcher = item_matcher(item)
    hits: list[str] = []
    spans: dict[str, list[list[int]]] = {}
    for index, seg in _agent_segments(segments):
        check = matcher.check(seg.text)
        if check.hits:
            spans[str(index)] = _spans(seg.text, check.text)
            hits.extend(h for h in check.hits if h not in hits)
    found = {normalise(h) for h in hits}
    missing: list[str] = []
    if item.kind == CHECK_FORBIDDEN:
        passed = not hits
        note = "" if passed else "Forbidden words: " + ", ".join(hits)
    else:
        missing = [" | ".join(line) for line in keyword_lines(item.keywords)
                   if not any(normalise(w) in found for w in line)]
        passed = not missing
        note = "" if passed else "Missing: " + ", ".join(missing)
    return {"checked": True, "passed": passed, "hits": hits, "missing": missing, "spans": spans,
            "note": note}


def longest_silence(segments: list[Segment]) -> float:
    """The longest gap in seconds between the end of what was said so far and the next segment."""
    ordered = sorted(segments, key=lambda s: s.start)
    longest, said_until = 0.0, ordered[0].end
    for seg in ordered[1:]:
        longest = max(longest, seg.start - said_until)
        said_until = max(said_until, seg.end)
    return round(longest, 2)


def speech_rate(segments: list[Segment]) -> float | None:
    """The agent's characters (letters and digits) per minute of the agent's speaking time."""
    agent = [s for _i, s in _agent_segments(segments)]
    seconds = sum(s.end - s.start for s in agent)
    if seconds <= 0:
        return None
    chars = sum(len(normalise(s.text)) for s in agent)
    return round(chars * 60.0 / seconds, 1)


def check_one(item: QaCheckItem, segments: list[Segment] | None) -> dict:
    """The machine's result for one item (see the module docstring)."""
    result = {"kind": item.kind, "checked": False, "passed": None, "hits": [], "spans": {}, "note": "",
              "value": None}
    if item.kind == CHECK_MANUAL:
        result["note"] = "Judged by the inspector"
    elif segments is None:
        result["note"] = "Not checked: the call has no transcript"
    elif item.kind in (CHECK_FORBIDDEN, CHECK_REQUIRED):
        result.update(_keywords(item, segments))
    elif not has_timings(segments):
        result["note"] = "Not checked: the transcript has no timings"
    elif item.kind == CHECK_SILENCE:
        value = longest_silence(segments)
        passed = value <= item.threshold
        result.update(checked=True, passed=passed, value=value,
                      note=f"Longest silence {value:g} s (limit {item.threshold:g} s)")
    elif item.kind == CHECK_SPEECH_RATE:
        value = speech_rate(segments)
        if value is None:
            result["note"] = "Not checked: the agent does not speak"
        else:
            passed = value <= item.threshold
            result.update(checked=True, passed=passed, value=value,
                          note=f"Agent speech rate {value:g} characters/min (limit {item.threshold:g})")
    result["points"] = item_points(item.points, result["passed"])
    return result


def run_checks(base_score: int, items: list[QaCheckItem], transcript) -> tuple[int, dict]:
    """(machine_score, results by item id as str) for a call's transcript."""
    segments = parse_transcript(transcript)
    results = {str(item.id): check_one(item, segments) for item in items}
    score = total(base_score, [(item.points, results[str(item.id)]["passed"]) for item in items])
    return score, results
