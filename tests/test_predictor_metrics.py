"""Predictor metrics against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bgen_assets.predictors.core import Predictions
from bgen_assets.predictors.metrics import anchor_intents, evaluate, ndcg_at_k, score

INTENTS = ["a", "b", "c"]


def test_macro_precision_recall_count_an_intent_never_predicted():
    # true a a b c / predicted a b b a: c is never predicted.
    # precision a 1/2, b 1/2, c 0 -> 1/3; recall a 1/2, b 1, c 0 -> 1/2
    # F1 a 1/2, b 2/3, c 0: anchors [a] -> 1/2, tail [b, c] -> 1/3
    scores = np.eye(3)[[0, 1, 1, 0]]
    figures = score(["a", "a", "b", "c"], ["a", "b", "b", "a"], scores, INTENTS, anchors=["a"])
    assert figures["precision"] == pytest.approx(1 / 3)
    assert figures["recall"] == pytest.approx(1 / 2)
    assert figures["anchor_f1"] == pytest.approx(1 / 2)
    assert figures["tail_f1"] == pytest.approx(1 / 3)
    assert (figures["targets"], figures["ranked_intents"], figures["predicted_intents"]) == (4, 3, 2)  # c never first


def test_an_intent_absent_from_the_targets_still_counts_in_the_macro_mean():
    # c never occurs and is never predicted: precision and recall 0 for c, so perfect
    # predictions of a and b give 2/3, not 1
    figures = score(["a", "b"], ["a", "b"], np.eye(3)[[0, 1]], INTENTS, anchors=["a"])
    assert figures["precision"] == pytest.approx(2 / 3)
    assert figures["recall"] == pytest.approx(2 / 3)


def test_ndcg_of_a_single_relevant_intent():
    scores = np.array([[0.9, 0.5, 0.1, 0.0, -1.0, -2.0]] * 2)
    # true at rank 2 -> 1/log2(3); at rank 5 -> 0 within 3, 1/log2(6) within 5
    assert ndcg_at_k(scores, [1, 4], 3) == pytest.approx([1 / math.log2(3), 0.0])
    assert ndcg_at_k(scores, [1, 4], 5) == pytest.approx([1 / math.log2(3), 1 / math.log2(6)])
    assert ndcg_at_k(scores, [0, 0], 3) == pytest.approx([1.0, 1.0])


def test_ndcg_ties_take_the_mean_gain_of_the_ranks_the_tie_occupies():
    # three intents share the top score: ranks 1..3 -> (1 + 1/log2 3 + 1/2) / 3
    assert ndcg_at_k(np.array([[1.0, 1.0, 1.0, 0.0]]), [2], 3) == pytest.approx([(1 + 1 / math.log2(3) + 0.5) / 3])
    # one higher, four tied: ranks 2..5; within 3 only ranks 2 and 3 count
    tied = np.array([[2.0, 1.0, 1.0, 1.0, 1.0]])
    assert ndcg_at_k(tied, [3], 3) == pytest.approx([(1 / math.log2(3) + 0.5) / 4])
    assert ndcg_at_k(tied, [3], 5) == pytest.approx(
        [(1 / math.log2(3) + 0.5 + 1 / math.log2(5) + 1 / math.log2(6)) / 4])
    # the value does not depend on which tied column is the true one
    assert ndcg_at_k(tied, [1], 3) == pytest.approx(ndcg_at_k(tied, [4], 3))


def test_anchor_intents_cover_the_declared_share():
    counts = pd.Series({"c": 2, "a": 5, "b": 3})
    assert anchor_intents(counts, 0.8) == ["a", "b"]        # 5/10 < 0.8, 8/10 reaches it
    assert anchor_intents(counts, 0.5) == ["a"]
    assert anchor_intents(["x", "y", "y", "x", "z"], 0.4) == ["x"]   # equal counts: by name


def test_evaluate_pools_all_targets_and_splits_by_user():
    frame = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "ts": pd.date_range("2019-01-01", periods=4),
                          "intent": ["a", "a", "b", "c"], "predicted": ["a", "b", "b", "a"]})
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 3.0, 2.0], [3.0, 2.0, 1.0]])
    pooled, per_user = evaluate(Predictions(frame, scores, INTENTS), anchors=["a"])
    assert pooled["precision"] == pytest.approx(1 / 3)
    # NDCG@3: ranks 1, 3, 1, 3 -> (1 + 1/2 + 1 + 1/2) / 4
    assert pooled["ndcg@3"] == pytest.approx(0.75)
    u1 = per_user.set_index("user_id").loc["u1"]
    # u1: true a a, predicted a b -> precision a 1, b 0, c 0 -> 1/3; recall a 1/2 -> 1/6
    assert u1["precision"] == pytest.approx(1 / 3)
    assert u1["recall"] == pytest.approx(1 / 6)
    assert u1["ndcg@5"] == pytest.approx(0.75)
    assert u1["targets"] == 2
    assert list(per_user["user_id"]) == ["u1", "u2"]
