"""Sensitive words: normalisation, an Aho-Corasick matcher, the per-process cache, bulk import.

Text and words are compared in a normalised form: NFKC (full-width → half-width, compatibility forms),
traditional → simplified Chinese (zhconv's one-character table), case folded, and everything that is not a
letter or a digit removed — so "Ｆ.Ｒ.Ｅ.Ｅ", "免 費" and "免-费" all read as the plain word. Normalisation is
per character (a `str.translate` table filled on demand), so each normalised character maps back to the
original character it came from: masking replaces the ORIGINAL characters of a hit with "*".

Allow-list entries (`allowed=True`) win: a blocked or masked hit lying inside an allow-listed hit is
ignored (e.g. allow "发票抬头" while "发票" is blocked).

Each process keeps one Matcher; a version counter in Redis (bumped after a commit that touched
SensitiveWord) tells every process to rebuild it. The new automaton is built aside and swapped in with a
single assignment, so workers scanning with the old one are never stopped.
"""

from __future__ import annotations

import csv
import io
import threading
import unicodedata
from dataclasses import dataclass, field

import ahocorasick_rs
from sqlalchemy import select

from app.models.sms import BLOCK, MASK, SensitiveWord
from app.services.errors import DomainError
from app.services.versioned_cache import VersionedCache

VERSION_KEY = "crm:sms:words:version"
CHECK_EVERY = 1.0  # seconds between looks at the shared version
MASK_CHAR = "*"
ALLOW = "allow"  # bulk-import action naming an allow-list entry


def _t2s_table() -> dict[str, str]:
    try:
        from zhconv.zhconv import getdict

        table = getdict("zh-hans")
    except Exception:  # pragma: no cover - zhconv missing: no traditional → simplified folding
        return {}
    return {k: v for k, v in table.items() if len(k) == 1 and len(v) == 1}


class _CharTable(dict):
    """str.translate table: character code → its normalised form, computed once per character."""

    def __init__(self) -> None:
        super().__init__()
        self._t2s = _t2s_table()
        self._lock = threading.Lock()

    def __missing__(self, code: int) -> str:
        text = unicodedata.normalize("NFKC", chr(code))
        text = "".join(self._t2s.get(c, c) for c in text).casefold()
        # casefold may denormalise (e.g. "ß" → "ss" is fine, but some yield combining marks): keep only
        # letters and digits, which also drops spaces, punctuation and symbols inserted between characters.
        value = "".join(c for c in unicodedata.normalize("NFKC", text) if c.isalnum())
        with self._lock:
            self[code] = value
        return value


_TABLE = _CharTable()


def normalise(text: str | None) -> str:
    """The comparable form of `text` (see the module docstring)."""
    if not text:
        return ""
    return text.translate(_TABLE)


def normalise_with_map(text: str) -> tuple[str, list[int]]:
    """The normalised text and, for each of its characters, the index of the original character."""
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        norm = _TABLE[ord(ch)]
        if norm:
            out.append(norm)
            index.extend([i] * len(norm))
    return "".join(out), index


@dataclass(frozen=True)
class Check:
    blocked: bool
    text: str  # the original with masked hits replaced by "*" (unchanged when nothing is masked)
    hits: list[str] = field(default_factory=list)  # the configured words that hit, in order, once each


@dataclass(frozen=True)
class _Entry:
    word: str
    action: str  # block / mask / allow


class Matcher:
    """An immutable automaton over the normalised words; `check` is thread-safe."""

    def __init__(self, words: list[tuple[str, str, bool]]):
        """`words`: (word, action, allowed) rows."""
        entries: dict[str, _Entry] = {}
        rank = {ALLOW: 3, BLOCK: 2, MASK: 1}
        for word, action, allowed in words:
            key = normalise(word)
            if not key:
                continue
            act = ALLOW if allowed else (action if action in (BLOCK, MASK) else BLOCK)
            old = entries.get(key)
            if old is None or rank[act] > rank[old.action]:
                entries[key] = _Entry(word, act)
        self.patterns = list(entries)
        self.entries = [entries[p] for p in self.patterns]
        self.has_allow = any(e.action == ALLOW for e in self.entries)
        self.size = len(self.patterns)
        self._ac = ahocorasick_rs.AhoCorasick(self.patterns) if self.patterns else None

    def check(self, text: str | None) -> Check:
        text = text or ""
        if self._ac is None:
            return Check(False, text, [])
        norm = normalise(text)
        found = self._ac.find_matches_as_indexes(norm, overlapping=True)
        if not found:
            return Check(False, text, [])
        if self.has_allow:
            allowed = [(s, e) for i, s, e in found if self.entries[i].action == ALLOW]
            found = [(i, s, e) for i, s, e in found if self.entries[i].action != ALLOW
                     and not any(a <= s and e <= b for a, b in allowed)]
            if not found:
                return Check(False, text, [])
        hits: list[str] = []
        blocked = False
        spans: list[tuple[int, int]] = []
        for i, s, e in sorted(found, key=lambda m: (m[1], m[2])):
            entry = self.entries[i]
            if entry.word not in hits:
                hits.append(entry.word)
            if entry.action == BLOCK:
                blocked = True
            else:
                spans.append((s, e))
        masked = text
        if spans:
            # Recompute on the mapped form: per-character normalisation makes both forms identical.
            _mapped, index = normalise_with_map(text)
            chars = list(text)
            for s, e in spans:
                for k in range(index[s], index[e - 1] + 1):
                    if not chars[k].isspace():
                        chars[k] = MASK_CHAR
            masked = "".join(chars)
        return Check(blocked, masked, hits)


EMPTY = Matcher([])


class WordCache(VersionedCache):
    """This process's matcher, rebuilt when any process commits a change to the word list."""

    version_key = VERSION_KEY
    watched = (SensitiveWord,)

    def build(self, session) -> Matcher:
        rows = session.execute(
            select(SensitiveWord.word, SensitiveWord.action, SensitiveWord.allowed)
        ).all()
        return Matcher([tuple(r) for r in rows])


cache = WordCache(CHECK_EVERY)


def matcher(session) -> Matcher:
    """The current matcher of this process (rebuilt when the word list changed)."""
    return cache.get(session)


def install(db) -> None:
    """Watch the app's session for word-list changes; share the version through the app's Redis."""
    cache.install(db)


# --- bulk import -------------------------------------------------------------------------------------
@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, message)


def check_word(word: SensitiveWord) -> None:
    """Save rules for one word (DomainError with the field)."""
    text = (word.word or "").strip()
    if not text:
        raise DomainError("Enter a word", field="word")
    if len(text) > 100:
        raise DomainError("A word has at most 100 characters", field="word")
    if not normalise(text):
        raise DomainError("The word has no letters or digits once symbols are removed", field="word")
    if word.action not in (BLOCK, MASK):
        raise DomainError("Action must be block or mask", field="action")
    word.word = text


def parse_lines(text: str) -> tuple[list[tuple[int, str, str | None, str]], list[tuple[int, str]]]:
    """Rows (line, word, category, action) from "word" or "word,category,action" lines; and errors."""
    rows, errors = [], []
    for number, parts in enumerate(csv.reader(io.StringIO(text.lstrip("\ufeff"))), start=1):
        parts = [p.strip() for p in parts]
        if not parts or not parts[0] or parts[0].startswith("#"):
            continue
        if number == 1 and parts[0].lower() == "word":
            continue  # a header row
        word = parts[0]
        category = parts[1] if len(parts) > 1 and parts[1] else None
        action = (parts[2].lower() if len(parts) > 2 and parts[2] else BLOCK)
        if action not in (BLOCK, MASK, ALLOW):
            errors.append((number, f"Unknown action {action!r}: use block, mask or allow"))
            continue
        if len(word) > 100 or not normalise(word):
            errors.append((number, f"{word[:30]!r} is not a usable word"))
            continue
        rows.append((number, word, category, action))
    return rows, errors


def import_words(session, text: str, default_category: str | None = None) -> ImportResult:
    """Add or update words from a list (one a line, optional category and action); idempotent.

    The caller commits. Running the same list twice changes nothing the second time.
    """
    rows, errors = parse_lines(text)
    result = ImportResult(errors=errors)
    existing = {w.word: w for w in session.scalars(select(SensitiveWord))}
    for _number, word, category, action in rows:
        allowed = action == ALLOW
        act = BLOCK if allowed else action
        category = category or default_category
        row = existing.get(word)
        if row is None:
            row = SensitiveWord(word=word, category=category, action=act, allowed=allowed)
            session.add(row)
            existing[word] = row
            result.added += 1
        elif (row.action, row.allowed) != (act, allowed) or (category and row.category != category):
            row.action, row.allowed = act, allowed
            if category:
                row.category = category
            result.updated += 1
        else:
            result.unchanged += 1
    session.flush()
    return result
