"""The Markov baseline on real fixture events: seeded, schema-valid, in-vocabulary, and
blind to anything after the conditioning week; its variant with several sampled weeks per real
week (markov_x4)."""

import numpy as np
import pandas as pd
import pytest

from bgen_assets.generators import load_generator_specs
from bgen_assets.generators import markov
from conftest import generated_weeks


@pytest.fixture(scope="module")
def fitted(built):
    events = built.warehouse.query('SELECT * FROM tokyo.events ORDER BY user_id, ts')
    params = next(s for s in load_generator_specs() if s.name == "markov").settings
    model = markov.from_table(markov.fit(events[events.user_id != "1004"], params, 30))
    history = built.warehouse.query(
        "SELECT user_id, strftime(date_trunc('week', ts), '%Y-%m-%d') AS week, ts, weekday, time_slot, location, intent "
        "FROM tokyo.events WHERE user_id = '1004' ORDER BY ts")
    return model, history, params, events


def generate(fitted, week, seed, history=None):
    """The generator given the user's whole history: leaving out later weeks is its own job."""
    model, full_history, params, _ = fitted
    history = full_history if history is None else history
    return markov.generate(model, history, week, params, np.random.default_rng(seed), 30)


def test_fit_table_round_trips(fitted):
    _, _, params, events = fitted
    table = markov.fit(events, params, 30)
    assert set(table["kind"]) == {"transition", "bucket", "time_of_week"}
    counts = markov.from_table(table)
    assert sum(counts.transitions[""].values()) == len(events)  # order-0 counts every event once
    assert sum(counts.time_of_week.values()) == len(events)


def test_generation_is_deterministic_and_valid(fitted):
    _, history, _, events = fitted
    week = sorted(history.week.unique())[2]
    first, again, other = generate(fitted, week, 1), generate(fitted, week, 1), generate(fitted, week, 2)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert first.weekday.between(0, 6).all() and first.time_slot.between(0, 47).all()
    assert first.ts.is_monotonic_increasing
    target = pd.Timestamp(week) + pd.Timedelta(days=7)
    assert (first.ts >= target).all() and (first.ts < target + pd.Timedelta(days=7)).all()
    assert (first.ts.dt.weekday == first.weekday).all()
    pairs = set(zip(events.location, events.intent))
    assert set(zip(first.location, first.intent)) <= pairs
    assert len(first) in set(history[history.week <= week].groupby("week").size())


def test_events_after_the_conditioning_week_do_not_matter(fitted):
    _, history, _, _ = fitted
    week = sorted(history.week.unique())[1]
    tampered = history.copy()
    later = tampered.week > week
    tampered.loc[later, "location"] = "Nowhere"
    pd.testing.assert_frame_equal(generate(fitted, week, 5), generate(fitted, week, 5, tampered))


def test_markov_x4_samples_four_weeks_per_real_week_the_first_being_markovs(built):
    """The lever "synthetic weeks per real week" (issue 12) through the asset graph: every partition
    holds `samples_per_week` distinct weeks, and sample 0 is what the one-sample declaration writes."""
    assert next(s for s in load_generator_specs() if s.name == "markov_x4").samples_per_week == 4
    one, four = (generated_weeks(built, "tokyo", name, "1032", max_weeks=2) for name in ("markov", "markov_x4"))
    assert four.groupby("week")["sample"].unique().map(sorted).tolist() == [[0, 1, 2, 3]] * 2
    events = ["week", "target_week", "ts", "weekday", "time_slot", "location", "intent"]
    for _, week in four.groupby("week"):
        sampled = [frame[events].reset_index(drop=True) for _, frame in week.groupby("sample")]
        assert all(not a.equals(b) for i, a in enumerate(sampled) for b in sampled[i + 1:])
    first = four[four["sample"] == 0][events].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, one[events].reset_index(drop=True))
    log = built.warehouse.query("SELECT week, sample, status FROM tokyo.synthetic_markov_x4_log WHERE user_id = '1032'")
    assert sorted(map(tuple, log[["week", "sample"]].values.tolist())) == sorted(
        (week, sample) for week in set(four["week"]) for sample in range(4))
    status = built.synthetic_status("tokyo", "markov_x4", ["1032"], 2)  # a row per week, not per sample
    assert not status.duplicated(["user_id", "week"]).any() and status["wanted"].sum() == 2
    assert not status["stale"].any()
