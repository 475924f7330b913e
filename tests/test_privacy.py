"""Privacy metrics against hand-computed cases: slot-aligned overlap, top-k uniqueness,
membership inference, the mu-GDP epsilon."""

import math

import numpy as np
import pandas as pd
import pytest

from bgen_assets.config import PrivacyGate
from bgen_assets.quality import privacy
from bgen_assets.quality.gate import judge
from bgen_assets.quality.fidelity import with_week


def events(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "ts", "location"]).assign(ts=lambda f: pd.to_datetime(f["ts"]))
    return frame.assign(weekday=frame["ts"].dt.weekday, time_slot=(frame["ts"].dt.hour * 60 + frame["ts"].dt.minute) // 30,
                        intent="any")


def test_overlap_ratio_of_tiny_weeks():
    real = events([("r", "2019-01-07 00:05", "Home"), ("r", "2019-01-07 00:20", "Gym"),  # same slot: Home counts
                   ("r", "2019-01-07 00:40", "Office"), ("r", "2019-01-08 00:00", "Home")])
    # a synthetic week two weeks later: Monday slot 0 Home (same), slot 1 Cafe (differs), Wednesday slot 10 Gym
    synthetic = events([("s", "2019-01-21 00:10", "Home"), ("s", "2019-01-21 00:31", "Cafe"),
                        ("s", "2019-01-23 05:00", "Gym")]).assign(week="2019-01-14")
    real_grid, synthetic_grid = privacy.grids(real, synthetic, 30)
    # 1 identical slot / 4 slots occupied in either week (Mon 0, Mon 1, Tue 0, Wed 10)
    assert privacy.overlap_matrix(synthetic_grid, real_grid).tolist() == [[pytest.approx(0.25)]]
    assert privacy.overlap_matrix(real_grid, real_grid).tolist() == [[1.0]]
    assert real_grid.keys.to_dict("records") == [{"user_id": "r", "week": "2019-01-07"}]
    assert synthetic_grid.keys.to_dict("records") == [{"user_id": "s", "week": "2019-01-14"}]


def test_each_sampled_week_has_its_own_nearest_real_week():
    real = events([("r", "2019-01-07 00:05", "Home"), ("r", "2019-01-07 09:00", "Office")])
    copy = events([("r", "2019-01-14 00:05", "Home"), ("r", "2019-01-14 09:00", "Office")]).assign(week="2019-01-07")
    elsewhere = copy.assign(location="Cafe")
    synthetic = pd.concat([copy.assign(sample=0), elsewhere.assign(sample=1)], ignore_index=True)
    table, weeks = privacy.privacy_table(real, [synthetic], "two samples", 30)
    assert weeks[["sample", "top1_overlap"]].values.tolist() == [[0, 1.0], [1, 0.0]]
    # with u: the copy (1) and the other sample (0) of the week each was generated from
    assert table.iloc[0]["synthetic_weeks"] == 2 and table.iloc[0]["dp_mean_in"] == 0.5


def test_top_k_uniqueness():
    overlaps = np.array([[0.2, 0.9, 0.5, 0.1, 0.0, 0.3], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    weeks = privacy.uniqueness(overlaps, pd.DataFrame({"user_id": ["a", "b"], "week": ["w", "w"]}))
    assert weeks["top1_overlap"].tolist() == pytest.approx([0.9, 0.0])
    assert weeks["top3_overlap"].tolist() == pytest.approx([(0.9 + 0.5 + 0.3) / 3, 0.0])
    assert weeks["top5_overlap"].tolist() == pytest.approx([(0.9 + 0.5 + 0.3 + 0.2 + 0.1) / 5, 0.0])
    assert privacy.top_k_vector(overlaps[:, :2], 3)[0].tolist()[:2] == pytest.approx([0.9, 0.2])
    assert math.isnan(privacy.top_k_vector(overlaps[:, :2], 3)[0, 2])  # fewer real weeks than k


def test_gaussian_mu_by_hand():
    # means 1.0 and 0.1, pooled variance (0.02 + 0.02) / (3 + 3 - 2) = 0.01
    assert privacy.gaussian_mu(np.array([0.9, 1.0, 1.1]), np.array([0.0, 0.1, 0.2])) == pytest.approx(9.0)
    assert privacy.gaussian_mu(np.array([1.0, 1.0]), np.array([0.0, 0.0])) == math.inf
    assert privacy.gaussian_mu(np.array([0.5]), np.array([0.5])) == 0.0


def standard_normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def test_gdp_epsilon_known_value_and_monotone():
    epsilon = privacy.gdp_epsilon(1.0)
    # 1-GDP at delta = 1e-5 is about (4.38, 1e-5)-DP; check the defining equation independently of scipy
    assert epsilon == pytest.approx(4.377, abs=1e-3)
    assert (standard_normal_cdf(-epsilon + 0.5) - math.exp(epsilon) * standard_normal_cdf(-epsilon - 0.5)
            == pytest.approx(1e-5, rel=1e-6))
    values = [privacy.gdp_epsilon(mu) for mu in (0.05, 0.1, 0.5, 1, 2, 5, 20)]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert privacy.gdp_epsilon(0.0) == 0.0 and privacy.gdp_epsilon(math.inf) == math.inf


def test_membership_inference_separates_copies_and_not_noise():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 4)
    member = users < 10
    copied = np.where(member[:, None], 1.0, rng.uniform(0, 0.3, (80, 1))) * np.ones((1, 5))
    assert privacy.membership_inference(copied, member, users) == dict.fromkeys(privacy.CLASSIFIERS, 1.0)
    noise = rng.uniform(0, 0.3, (80, 5))
    assert max(privacy.membership_inference(noise, member, users).values()) < 0.75
    assert all(math.isnan(v) for v in privacy.membership_inference(noise, np.ones(80, bool), users).values())


def test_membership_samples_are_balanced_and_leave_out_unused_weeks():
    real = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "c", "c", "c"], "week": list("12312123")})
    synthetic = pd.DataFrame({"user_id": ["a", "a"], "week": ["1", "3"]})
    samples = privacy.membership_samples(real, synthetic, seed=0)
    assert samples[samples["member"]][["user_id", "week"]].values.tolist() == [["a", "1"], ["a", "3"]]
    assert len(samples[~samples["member"]]) == 2 and set(samples[~samples["member"]]["user_id"]) <= {"b", "c"}


def test_when_every_user_was_generated_non_members_are_the_weeks_nothing_was_conditioned_on():
    real = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "c", "c", "c"], "week": list("12312123")})
    synthetic = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c", "c"], "week": ["1", "2", "1", "2", "1", "2"]})
    samples = privacy.membership_samples(real, synthetic, seed=0)
    non_members = samples[~samples["member"]][["user_id", "week"]].values.tolist()
    assert non_members == [["a", "3"], ["c", "3"]]   # b has no week outside its conditioning weeks
    members = samples[samples["member"]]
    assert len(members) == 2 and set(members["user_id"]) <= {"a", "c"} and set(members["week"]) <= {"1", "2"}


def random_real_weeks(rng) -> pd.DataFrame:
    """12 users x 3 weeks, each week 12 events in distinct random slots at random places among 30."""
    slots = pd.date_range("2019-01-07", periods=7 * 48, freq="30min")
    real = pd.concat([
        events([(f"u{u}", slots[s], f"L{rng.integers(30)}") for s in rng.choice(len(slots), 12, replace=False)]
               ).assign(ts=lambda f, w=w: f["ts"] + pd.Timedelta(weeks=w))
        for u in range(12) for w in range(3)], ignore_index=True)
    return real.assign(weekday=real["ts"].dt.weekday)


def copies_of_half_the_users(real: pd.DataFrame) -> pd.DataFrame:
    """Users u0-u5's weeks written again one week later: a generator that copies its input."""
    weeks = with_week(real)
    generated = weeks[weeks["user_id"].isin([f"u{u}" for u in range(6)])]
    return generated.assign(ts=generated["ts"] + pd.Timedelta(weeks=1))


def test_privacy_table_flags_copies_and_not_shuffled_weeks():
    rng = np.random.default_rng(1)
    real = random_real_weeks(rng)
    copies = copies_of_half_the_users(real)
    fresh = copies.assign(location=rng.permutation(copies["location"].to_numpy()))  # same times, other places
    copy_table, copy_weeks = privacy.privacy_table(real, [copies], "copy", 30)
    fresh_table, _ = privacy.privacy_table(real, [fresh], "fresh", 30)
    copy_all, fresh_all = copy_table.iloc[0], fresh_table.iloc[0]
    assert copy_table["level"].tolist() == ["all"] + ["user"] * 6 and len(copy_weeks) == 18
    assert copy_all["share_top1_at_least"] == 1.0 and copy_all["top1_overlap_mean"] == 1.0
    assert copy_all["mia_accuracy"] == 1.0 and copy_all["mia_samples"] == 36
    assert copy_all["dp_epsilon"] > fresh_all["dp_epsilon"]
    assert fresh_all["share_top1_at_least"] == 0.0 and fresh_all["mia_accuracy"] <= 0.75
    empty, _ = privacy.privacy_table(real, [copies.iloc[:0]], "none", 30)
    assert empty["synthetic_weeks"].tolist() == [0]


def test_the_gate_fails_weeks_below_the_overlap_level_that_still_give_their_users_away():
    real = random_real_weeks(np.random.default_rng(2))
    copies = copies_of_half_the_users(real)
    # every third event kept, the others moved elsewhere: each synthetic week overlaps its real week by 1/3
    partial = copies.assign(location=copies["location"].where(np.arange(len(copies)) % 3 == 0, "Elsewhere"))
    table, _ = privacy.privacy_table(real, [partial], "partial", 30)
    summary = table.iloc[0].to_dict()
    gate = PrivacyGate()
    assert summary["top1_overlap_mean"] == pytest.approx(1 / 3)
    assert summary["share_top1_at_least"] == 0.0  # no near copy: the overlap criterion passes
    assert summary["mia_accuracy"] > gate.max_membership_inference_accuracy
    passed, reason = judge(summary, gate)
    assert not passed
    assert reason == (f"privacy gate failed: membership inference accuracy {summary['mia_accuracy']:.3f} "
                      f"(privacy_gate.max_membership_inference_accuracy = {gate.max_membership_inference_accuracy:g})")
