"""Scorecard arithmetic and the save rules of scorecards and check items.

A score starts from the scorecard's `base_score`; an item with negative points deducts them when it is
violated (failed), an item with positive points adds them when it is met (passed). An item not checked
(the machine had no transcript or timings for it) counts neither way. The total is clamped to 0–100.
"""

from __future__ import annotations

from app.models.qa import (
    CHECK_FORBIDDEN,
    CHECK_KINDS,
    CHECK_REQUIRED,
    CHECK_SILENCE,
    CHECK_SPEECH_RATE,
    QaCheckItem,
    QaScorecard,
)
from app.services.errors import DomainError
from app.services.sms.words import normalise

MIN_SCORE, MAX_SCORE = 0, 100
KEYWORD_KINDS = (CHECK_FORBIDDEN, CHECK_REQUIRED)
THRESHOLD_KINDS = (CHECK_SILENCE, CHECK_SPEECH_RATE)


def clamp(value: float) -> int:
    return int(max(MIN_SCORE, min(MAX_SCORE, round(value))))


def item_points(points: int, passed: bool | None) -> int:
    """What one item contributes: its points when they apply (deduct on fail, add on pass), else 0."""
    if passed is None:
        return 0
    if points < 0:
        return 0 if passed else points
    return points if passed else 0


def total(base_score: int, outcomes) -> int:
    """The clamped score from the base and (points, passed) pairs (passed None: not checked)."""
    return clamp(base_score + sum(item_points(points, passed) for points, passed in outcomes))


def score_range(base_score: int, points) -> tuple[int, int]:
    """(worst, best) score a scorecard can give, after clamping."""
    points = list(points)
    worst = base_score + sum(p for p in points if p < 0)
    best = base_score + sum(p for p in points if p > 0)
    return clamp(worst), clamp(best)


def keyword_lines(text: str | None) -> list[list[str]]:
    """Keywords, one requirement a line; "a|b" on one line are alternatives (either one will do)."""
    lines = []
    for line in (text or "").splitlines():
        words = [w.strip() for w in line.split("|") if w.strip() and normalise(w.strip())]
        if words:
            lines.append(words)
    return lines


def check_scorecard(card: QaScorecard) -> None:
    if card.base_score is None or not MIN_SCORE <= card.base_score <= MAX_SCORE:
        raise DomainError("The base score must be between 0 and 100", field="base_score")
    if not (card.name or "").strip():
        raise DomainError("Enter a name", field="name")
    card.name = card.name.strip()
    if card.items:
        worst, best = score_range(card.base_score, [i.points for i in card.items])
        if worst == best:
            raise DomainError("With this base score the items can never change the score (%(score)s)",
                              field="base_score", score=best)


def siblings_of(item: QaCheckItem) -> list[QaCheckItem] | None:
    """The other items of `item`'s scorecard (None when it has none yet)."""
    card = item.scorecard
    if card is None:
        return None
    return [i for i in card.items if i is not item and i.id != item.id]


def check_item(item: QaCheckItem, siblings: list[QaCheckItem] | None = None) -> None:
    """Save rules for one check item; `siblings` are the scorecard's other items (for the range check)."""
    if not (item.name or "").strip():
        raise DomainError("Enter a name", field="name")
    if item.kind not in CHECK_KINDS:
        raise DomainError("Kind must be one of %(values)s", field="kind", values=", ".join(CHECK_KINDS))
    if item.points is None or item.points == 0:
        raise DomainError("Points must not be 0: negative deducts when violated, positive adds when met",
                          field="points")
    if not -MAX_SCORE <= item.points <= MAX_SCORE:
        raise DomainError("Points must be between -100 and 100", field="points")
    if item.kind in KEYWORD_KINDS:
        if not keyword_lines(item.keywords):
            raise DomainError("Enter the keywords, one a line (a|b for alternatives)", field="keywords")
    if item.kind in THRESHOLD_KINDS:
        if item.threshold is None or item.threshold <= 0:
            raise DomainError("Enter a threshold above 0 (seconds of silence / characters per minute)",
                              field="threshold")
    card = item.scorecard
    if card is not None and siblings is not None:
        base = card.base_score if card.base_score is not None else MAX_SCORE
        worst, best = score_range(base, [s.points for s in siblings] + [item.points])
        if worst == best:
            raise DomainError("With this item the scorecard always gives %(score)s: "
                              "no check could change the score (base %(base)s)", field="points",
                              score=best, base=base)
    item.name = item.name.strip()
