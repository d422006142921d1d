"""QA scoring arithmetic (deductions, additions, clamp 0–100, the scorecard's save rules) and the machine's
checks on transcripts: forbidden / required words through the SMS word engine's normalisation, silence,
speech rate, and transcripts without timings or without any transcript."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from app.models.qa import QaCheckItem, QaScorecard
from app.services.errors import DomainError
from app.services.qa import checks, scoring
from app.services.qa.checks import run_checks

T0 = dt.datetime(2026, 11, 1, 8, 0)


def item(id_, kind, points, keywords=None, threshold=None, updated_at=T0):
    return QaCheckItem(id=id_, name=f"{kind} {id_}", kind=kind, points=points, keywords=keywords,
                       threshold=threshold, updated_at=updated_at)


def seg(speaker, start, end, text):
    return {"speaker": speaker, "start": start, "end": end, "text": text}


# --- scoring ---------------------------------------------------------------------------------------------
def test_deductions_apply_on_fail_and_additions_on_pass():
    outcomes = [(-10, False), (-5, True), (5, True), (8, False), (-20, None), (20, None)]
    # -10 (failed deduction) + 5 (met addition); the rest do not apply, not-checked counts neither way
    assert scoring.total(80, outcomes) == 75


def test_score_is_clamped_to_0_and_100():
    assert scoring.total(95, [(10, True), (20, True)]) == 100
    assert scoring.total(30, [(-25, False), (-25, False)]) == 0
    assert scoring.total(100, []) == 100


def test_score_range_is_the_clamped_worst_and_best():
    assert scoring.score_range(90, [-30, -80, 5, 10]) == (0, 100)
    assert scoring.score_range(80, [-10, 5]) == (70, 85)


def test_check_item_requires_keywords_and_thresholds_per_kind():
    card = QaScorecard(name="c", base_score=100)
    with pytest.raises(DomainError) as err:
        scoring.check_item(QaCheckItem(name="x", kind="forbidden_words", points=-10, keywords=" \n--\n",
                                       scorecard=card), [])
    assert err.value.field == "keywords"
    with pytest.raises(DomainError) as err:
        scoring.check_item(QaCheckItem(name="x", kind="silence", points=-10, scorecard=card), [])
    assert err.value.field == "threshold"
    with pytest.raises(DomainError) as err:
        scoring.check_item(QaCheckItem(name="x", kind="speech_rate", points=-10, threshold=0,
                                       scorecard=card), [])
    assert err.value.field == "threshold"
    with pytest.raises(DomainError) as err:
        scoring.check_item(QaCheckItem(name="x", kind="manual", points=0, scorecard=card), [])
    assert err.value.field == "points"
    with pytest.raises(DomainError) as err:
        scoring.check_item(QaCheckItem(name="x", kind="whatever", points=-5, scorecard=card), [])
    assert err.value.field == "kind"
    scoring.check_item(QaCheckItem(name=" ok ", kind="required_words", points=-5, keywords="您好",
                                   scorecard=card), [])


def test_check_item_refuses_a_scorecard_whose_score_can_never_change():
    card = QaScorecard(name="c", base_score=100)
    # base 100 and only additions: every call scores 100 whatever happens
    with pytest.raises(DomainError) as err:
        scoring.check_item(QaCheckItem(name="bonus", kind="manual", points=10, scorecard=card), [])
    assert err.value.field == "points" and "always gives 100" in err.value.message
    card = QaScorecard(name="d", base_score=90)
    scoring.check_item(QaCheckItem(name="bonus", kind="manual", points=10, scorecard=card), [])


def test_check_scorecard_base_score_bounds():
    with pytest.raises(DomainError) as err:
        scoring.check_scorecard(QaScorecard(name="x", base_score=101))
    assert err.value.field == "base_score"
    with pytest.raises(DomainError):
        scoring.check_scorecard(QaScorecard(name="x", base_score=-1))


# --- keywords --------------------------------------------------------------------------------------------
def test_forbidden_words_match_through_full_width_and_inserted_symbols():
    forbidden = item(1, "forbidden_words", -20, keywords="保证退款\nguarantee")
    transcript = [seg("agent", 0, 4, "您好，这门课 保.证-退 款！"),
                  seg("customer", 5, 7, "真的保证退款吗"),  # the customer may say it
                  seg("agent", 8, 10, "ＧＵＡＲＡＮＴＥＥ，当然")]
    score, results = run_checks(100, [forbidden], json.dumps(transcript, ensure_ascii=False))
    result = results["1"]
    assert result["checked"] and result["passed"] is False
    assert result["hits"] == ["保证退款", "guarantee"]
    assert score == 80 and result["points"] == -20
    # the spans index the original text: what they cover normalises to the word
    text = transcript[0]["text"]
    (start, end), = result["spans"]["0"]
    assert text[start:end] == "保.证-退 款"
    assert "1" not in result["spans"]  # the customer's segment is not the agent's
    (start, end), = result["spans"]["2"]
    assert transcript[2]["text"][start:end] == "ＧＵＡＲＡＮＴＥＥ"


def test_forbidden_words_pass_when_absent():
    score, results = run_checks(90, [item(1, "forbidden_words", -20, keywords="包过")],
                                [seg("agent", 0, 1, "我们按大纲教学")])
    assert results["1"]["passed"] is True and score == 90


def test_required_words_every_line_alternatives_on_one_line():
    required = item(2, "required_words", -10, keywords="您好|你好\n工号")
    bonus = item(3, "required_words", 5, keywords="还有什么可以帮您")
    said = [seg("agent", 0, 2, "ＮＩ好！你 好，我是小王"), seg("customer", 2, 3, "工号多少")]
    score, results = run_checks(90, [required, bonus], said)
    assert results["2"]["passed"] is False and "工号" in results["2"]["note"]  # said by the customer only
    assert results["3"]["passed"] is False
    assert score == 80
    said.append(seg("agent", 3, 6, "我的工-号是 1024，还有什么可以帮您？"))
    score, results = run_checks(90, [required, bonus], said)
    assert results["2"]["passed"] is True and results["3"]["passed"] is True
    assert score == 95


def test_matcher_is_cached_per_item_version():
    first = item(7, "forbidden_words", -5, keywords="包过")
    assert checks.item_matcher(first) is checks.item_matcher(item(7, "forbidden_words", -5, keywords="包过"))
    edited = item(7, "forbidden_words", -5, keywords="稳过", updated_at=T0 + dt.timedelta(seconds=1))
    assert checks.item_matcher(edited) is not checks.item_matcher(first)
    assert run_checks(100, [edited], [seg("agent", 0, 1, "包过")])[1]["7"]["passed"] is True
    assert run_checks(100, [edited], [seg("agent", 0, 1, "稳.过")])[1]["7"]["passed"] is False


# --- silence and speech rate --------------------------------------------------------------------------------
def test_silence_is_the_longest_gap_between_segments():
    silence = item(4, "silence", -10, threshold=5)
    talk = [seg("agent", 0, 4, "您好"), seg("customer", 3, 10, "嗯"),  # overlap: no gap
            seg("agent", 14, 15, "好的"), seg("customer", 16, 17, "再见")]
    score, results = run_checks(100, [silence], talk)
    assert results["4"]["value"] == 4 and results["4"]["passed"] is True and score == 100
    talk.append(seg("agent", 23.5, 25, "还在吗"))
    score, results = run_checks(100, [silence], talk)
    assert results["4"]["value"] == 6.5 and results["4"]["passed"] is False and score == 90


def test_speech_rate_counts_agent_characters_per_minute():
    rate = item(5, "speech_rate", -15, threshold=300)
    # agent: 10 letters/digits (punctuation and spaces do not count) over 3 s → 200 per minute
    talk = [seg("agent", 0, 3, "您好，我是 王老师 123"), seg("customer", 3, 4, "很多很多很多很多字")]
    assert checks.speech_rate(checks.parse_transcript(talk)) == 200.0
    score, results = run_checks(100, [rate], talk)
    assert results["5"]["passed"] is True and score == 100
    talk[0]["end"] = 1.5  # same words in half the time: 400 per minute
    score, results = run_checks(100, [rate], talk)
    assert results["5"]["value"] == 400.0 and results["5"]["passed"] is False and score == 85


def test_missing_timings_or_transcript_mean_not_checked_and_no_points():
    items = [item(4, "silence", -10, threshold=5), item(5, "speech_rate", -15, threshold=300),
             item(6, "forbidden_words", -20, keywords="包过"), item(8, "manual", -30)]
    untimed = [{"speaker": "agent", "text": "包过，包过"}, {"speaker": "customer", "start": 1, "text": "好"}]
    score, results = run_checks(100, items, untimed)
    assert [results[k]["checked"] for k in ("4", "5", "6", "8")] == [False, False, True, False]
    assert "no timings" in results["4"]["note"]
    assert score == 80  # only the keyword item could be checked
    score, results = run_checks(100, items, None)
    assert not any(r["checked"] for r in results.values()) and score == 100
    assert "no transcript" in results["6"]["note"]
    assert run_checks(100, items, "not json")[0] == 100
