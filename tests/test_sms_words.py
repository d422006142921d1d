"""Sensitive words: normalisation, Aho-Corasick hits (block / mask / allow-list), the per-process cache
rebuilt through the Redis version counter, and the idempotent bulk import."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.models.sms import BLOCK, MASK, SensitiveWord
from app.services.sms import words
from app.services.sms.words import Matcher, WordCache, import_words, matcher, normalise


@pytest.mark.parametrize("raw, expected", [
    ("ＦＲＥＥ", "free"),  # full width → half width, case
    ("F.R.E.E", "free"),  # symbols between characters
    ("f r\te\u3000e", "free"),  # spaces, tab, ideographic space
    ("免費", "免费"),  # traditional → simplified
    ("免-費*送", "免费送"),
    ("①②", "12"),  # NFKC compatibility digits
    ("", ""),
])
def test_normalise(raw, expected):
    assert normalise(raw) == expected


def test_normalise_with_map_points_at_original_characters():
    text = "a-Ｂ 費"
    norm, index = words.normalise_with_map(text)
    assert norm == normalise(text) == "ab费"
    assert [text[i] for i in index] == ["a", "Ｂ", "費"]


def test_block_hits_through_disguises():
    scan = Matcher([("免费", BLOCK, False), ("free", BLOCK, False)])
    for text in ("现在免費领取", "限时 免 - 费", "get it ＦＲＥＥ now", "F.r.E.e"):
        result = scan.check(text)
        assert result.blocked, text
        assert result.text == text  # blocked texts are not rewritten
    clean = scan.check("欢迎体验我们的课程")
    assert (clean.blocked, clean.hits, clean.text) == (False, [], "欢迎体验我们的课程")


def test_mask_replaces_the_original_characters():
    scan = Matcher([("微信", MASK, False)])
    result = scan.check("加微.信领资料")
    assert not result.blocked
    assert result.hits == ["微信"]
    assert result.text == "加***领资料"  # the inserted "." is part of the masked span
    result = scan.check("加 微 信 谢谢")
    assert result.text == "加 * * 谢谢"  # spaces kept, characters masked
    assert len(result.text) == len("加 微 信 谢谢")


def test_allow_list_entry_wins_over_a_word_inside_it():
    scan = Matcher([("发票", BLOCK, False), ("发票抬头", BLOCK, True)])
    assert scan.check("请提供发票抬头").blocked is False
    assert scan.check("请提供发票抬头").hits == []
    hit = scan.check("代开发票")
    assert hit.blocked and hit.hits == ["发票"]
    # the blocked word elsewhere in the same text still hits
    assert scan.check("发票抬头和代开发票").blocked


def test_block_and_mask_in_one_text():
    scan = Matcher([("赌博", BLOCK, False), ("vx", MASK, False)])
    result = scan.check("加VX看赌博")
    assert result.blocked
    assert result.hits == ["vx", "赌博"]
    assert result.text == "加**看赌博"


def test_words_equal_once_normalised_keep_the_strictest_action():
    scan = Matcher([("ＡＢＣ", MASK, False), ("abc", BLOCK, False)])
    assert scan.size == 1
    assert scan.check("x abc").blocked


def _add(session, **values):
    session.add(SensitiveWord(**values))
    session.commit()


def test_matcher_rebuilds_after_commit_and_other_processes_follow(session, monkeypatch):
    _add(session, word="刷单", action=BLOCK)
    assert matcher(session).check("兼职刷单").blocked
    # another process: its own cache over the same Redis, already holding the old automaton
    other = WordCache()
    other.redis = words.cache.redis
    assert other.redis is not None
    other._version = other.redis.get(words.VERSION_KEY)
    old = other.get(session)
    assert old.check("兼职刷单").blocked and not old.check("贷款广告").blocked
    before = words.cache.redis.get(words.VERSION_KEY)

    _add(session, word="贷款", action=BLOCK)
    assert words.cache.redis.get(words.VERSION_KEY) != before  # bumped after the commit
    assert matcher(session).check("贷款广告").blocked  # this process: at once
    monkeypatch.setattr(other, "check_every", 0.0)  # its next look at the shared version is due now
    fresh = other.get(session)
    assert fresh is not old and fresh.check("贷款广告").blocked  # the other process swapped in a new one
    assert old.check("贷款广告").blocked is False  # the old automaton, still held by a scan, is intact


def test_rolled_back_change_does_not_bump(session):
    before = words.cache.redis.get(words.VERSION_KEY)
    session.add(SensitiveWord(word="临时", action=BLOCK))
    session.flush()
    session.rollback()
    assert words.cache.redis.get(words.VERSION_KEY) == before


def test_unchanged_list_is_not_rebuilt(session):
    _add(session, word="博彩", action=BLOCK)
    first = matcher(session)
    builds = words.cache.builds
    assert matcher(session) is first
    assert words.cache.builds == builds


def test_import_is_idempotent_and_reports_line_errors(session):
    text = ("word,category,action\n"
            "代开发票,fraud,block\n"
            "加微信,contact,mask\n"
            "发票抬头,,allow\n"
            "坏行,x,explode\n"
            "\n"
            "# a comment\n"
            "***\n"
            "裸词\n")
    first = import_words(session, text, default_category="imported")
    session.commit()
    assert (first.added, first.updated, first.unchanged) == (4, 0, 0)
    assert [line for line, _ in first.errors] == [5, 8]
    rows = {w.word: (w.category, w.action, w.allowed) for w in session.scalars(select(SensitiveWord))}
    assert rows["代开发票"] == ("fraud", BLOCK, False)
    assert rows["加微信"] == ("contact", MASK, False)
    assert rows["发票抬头"] == ("imported", BLOCK, True)
    assert rows["裸词"] == ("imported", BLOCK, False)
    count = session.scalar(select(func.count()).select_from(SensitiveWord))

    again = import_words(session, text, default_category="imported")
    session.commit()
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
    assert session.scalar(select(func.count()).select_from(SensitiveWord)) == count

    changed = import_words(session, "加微信,contact,block\n")
    session.commit()
    assert (changed.added, changed.updated) == (0, 1)
    assert session.scalar(select(SensitiveWord.action).where(SensitiveWord.word == "加微信")) == BLOCK
    assert matcher(session).check("加 微 信").blocked
