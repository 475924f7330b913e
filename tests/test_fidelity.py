"""Fidelity metrics against hand-computed cases (no scipy in the expected values)."""

import math

import numpy as np
import pandas as pd
import pytest

from bgen_assets.quality import fidelity


def events(rows, week_column="week"):
    """Events from (user, ts, location, intent) tuples, with weekday and 30-minute slot."""
    frame = pd.DataFrame(rows, columns=["user_id", "ts", "location", "intent"]).assign(ts=lambda f: pd.to_datetime(f["ts"]))
    frame = frame.assign(weekday=frame["ts"].dt.weekday, time_slot=(frame["ts"].dt.hour * 60 + frame["ts"].dt.minute) // 30)
    return fidelity.with_week(frame).rename(columns={"week": week_column})


def test_jensen_shannon_divergence_by_hand():
    p, q = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    # m = (0.75, 0.25); JSD = 1/2 KL(p||m) + 1/2 KL(q||m), in bits
    by_hand = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert fidelity.jensen_shannon_divergence(p, q) == pytest.approx(by_hand)  # 0.3113
    assert fidelity.jensen_shannon_divergence(p, np.array([0.0, 1.0])) == pytest.approx(1.0)  # disjoint: the maximum
    assert fidelity.jensen_shannon_divergence(q, q) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(fidelity.jensen_shannon_divergence(p, np.zeros(2)))


def test_bhattacharyya_distance_by_hand():
    # BC = sqrt(1 * 0.5) -> BD = ln(2) / 2
    assert fidelity.bhattacharyya_distance(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2) / 2)
    # BC = 2 sqrt(0.25 * 0.75) = sqrt(3) / 2
    assert fidelity.bhattacharyya_distance(np.array([0.25, 0.75]), np.array([0.75, 0.25])) == pytest.approx(
        -math.log(math.sqrt(3) / 2))
    assert fidelity.bhattacharyya_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == math.inf
    assert fidelity.bhattacharyya_distance(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == pytest.approx(0.0, abs=1e-12)


def test_ks_p_value_small_samples():
    # completely separated samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3)
    assert fidelity.ks_p(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])) == pytest.approx(2 / 20)
    assert fidelity.ks_p(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)
    assert math.isnan(fidelity.ks_p(np.array([1.0]), np.array([])))


def test_corpus_bleu_by_hand():
    # one 5-token sentence, the last token wrong: n-gram precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty
    assert fidelity.corpus_bleu(["a b c d e"], ["a b c d f"]) == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    assert fidelity.corpus_bleu(["a b c d"], ["a b c d"]) == pytest.approx(1.0)


def test_event_features():
    week = events([("u", "2019-01-07 00:10", "Home", "Home"), ("u", "2019-01-09 01:40", "Office", "Work"),
                   ("u", "2019-01-09 02:00", "Shop", "Shop & Service"), ("u", "2019-01-14 09:00", "Home", "Home")])
    # Monday slot 0 -> 0; Wednesday 01:40 -> slot 3 -> 2 * 1440 + 90
    assert fidelity.time_of_week(week, 30).tolist() == [0, 2970, 2 * 1440 + 120, 540]
    assert fidelity.events_per_week(week, "week").tolist() == [3, 1]
    assert fidelity.inter_event_gaps(week, "week").tolist() == [2 * 1440 + 90, 20]  # never across weeks
    assert fidelity.week_sentences(week, "week").tolist() == ["Home Work Shop_&_Service", "Home"]


def test_generation_quality_from_the_log():
    log = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "status": ["ok", "ok", "failed", "ok"],
                        "attempts": [1, 2, 3, 0], "pass_at_1": [True, False, False, False]})
    assert fidelity.generation_quality(log) == {"pass_at_1": pytest.approx(1 / 3), "validity": 0.75}
    assert math.isnan(fidelity.generation_quality(log.assign(attempts=0))["pass_at_1"])  # no LLM request


def test_a_copy_of_the_real_weeks_is_perfect_and_a_shifted_one_is_not():
    real = events([(user, f"2019-01-{day:02d} {hour:02d}:00", f"L{hour}", intent)
                   for user in ("u", "v") for day in (7, 8, 14, 15)
                   for hour, intent in ((8, "Work"), (12, "Food"), (19, "Home"), (21, "Nightlife"))])
    copy = real.assign(target_week=real["week"])
    log = pd.DataFrame({"user_id": ["u", "v"], "status": ["ok", "ok"], "attempts": [0, 0], "pass_at_1": [False, False]})
    table = fidelity.fidelity_table(real, copy, log, "copy", 30)
    assert table["level"].tolist() == ["all", "user", "user"] and table["user_id"].tolist() == ["", "u", "v"]
    assert table[["ks_p_time_of_week", "ks_p_events_per_week", "ks_p_inter_event_gap", "bleu", "validity"]].sub(1).abs().lt(1e-9).all().all()
    assert table[["bd_intent", "jsd_intent", "bd_time_of_week", "jsd_time_of_week"]].abs().lt(1e-12).all().all()
    assert table["synthetic_weeks"].tolist() == [4, 2, 2] and table["synthetic_events_per_week"].tolist() == [8, 8, 8]

    late = copy.assign(ts=copy["ts"] + pd.Timedelta(days=4), weekday=copy["weekday"] + 4,  # Friday and Saturday
                       intent=copy["intent"].replace({"Nightlife": "Home"}))
    shifted = fidelity.fidelity_table(real, late, log, "late", 30).iloc[0]
    assert shifted["ks_p_time_of_week"] < 1e-6 and shifted["ks_p_inter_event_gap"] == pytest.approx(1.0)
    assert shifted["jsd_time_of_week"] == pytest.approx(1.0)  # no slot in common
    # intents (Work, Food, Home, Nightlife) = (1/4 each) vs (1/4, 1/4, 1/2, 0): BC = 2 * 1/4 + sqrt(1/8)
    assert shifted["bd_intent"] == pytest.approx(-math.log(0.5 + math.sqrt(1 / 8)))
    # 4 weeks, each W F H H W F H H against W F H N W F H N: matching 1-grams 6 of 8, 2-grams 4 of 7
    # (WF, FH twice), 3-grams 2 of 6 (WFH twice), 4-grams 0 of 5, which sacrebleu's default smoothing
    # ('exp') counts as 1 / (2 * 20) over the corpus
    assert shifted["bleu"] == pytest.approx((24 / 32 * 16 / 28 * 8 / 24 * 1 / 40) ** 0.25)


def test_sampled_weeks_of_one_target_week_are_weeks_of_their_own():
    real = events([("u", f"2019-01-07 {hour:02d}:00", f"L{hour}", intent)
                   for hour, intent in ((8, "Work"), (10, "Shop"), (12, "Food"), (15, "Work"), (19, "Home"))])
    copy = real.assign(target_week=real["week"])
    samples = pd.concat([copy.assign(sample=0), copy.assign(sample=1)], ignore_index=True)
    log = pd.DataFrame({"user_id": ["u", "u"], "status": ["ok", "ok"], "attempts": [0, 0], "pass_at_1": [False, False]})
    pooled = fidelity.fidelity_table(real, samples, log, "twice", 30).iloc[0]
    # two 5-event weeks, each the real week again: not one 10-event week with zero-minute gaps
    assert pooled["synthetic_weeks"] == 2 and pooled["synthetic_events_per_week"] == 5
    assert pooled[["ks_p_events_per_week", "ks_p_inter_event_gap", "bleu"]].sub(1).abs().lt(1e-9).all()


def test_no_synthetic_weeks_yet():
    real = events([("u", "2019-01-07 08:00", "Office", "Work"), ("u", "2019-01-08 08:00", "Office", "Work")])
    empty = real.iloc[:0].assign(target_week=pd.Series(dtype=str))
    log = pd.DataFrame(columns=["user_id", "status", "attempts", "pass_at_1"])
    table = fidelity.fidelity_table(real, empty, log, "none", 30)
    assert table["level"].tolist() == ["all"] and table["synthetic_weeks"].tolist() == [0]
    assert table[["bleu", "jsd_intent", "ks_p_time_of_week"]].isna().all().all()
