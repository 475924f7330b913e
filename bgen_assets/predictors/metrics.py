"""Next-intent metrics (NDCG@k, macro precision and recall, as the BehaviorGen paper reports
them), pooled over all test targets and per user.

- precision, recall: macro over all intents (scikit-learn, zero_division=0): an intent that
  is never predicted has precision 0, one that never occurs has recall 0, and both count in
  the mean. The predicted intent is the top-scored one; equal top scores go to the intent
  that comes first in the predictor's intent list.
- ndcg@k: one relevant intent (the true one), so NDCG@k = 1 / log2(1 + rank) when rank <= k,
  else 0. Ties: the expected value over a uniformly random order of the intents that share the
  true intent's score, i.e. the mean of that gain over the ranks the tied group occupies
  (neither optimistic nor pessimistic, and the same whatever order the intents are listed in).
- anchor_f1, tail_f1: macro F1 over the anchor intents / the tail intents (the other intents),
  anchors being the most frequent intents covering a declared share of events.
- ranked_intents: the intents the predictor ranks (its classes); predicted_intents: how many
  distinct ones it ranks first over the targets. Always predicting one intent gives a macro recall
  of 1 / ranked_intents (or 0), whatever the predictor learnt.
- intent_counts (per-user rows only): JSON {intent: [true, predicted, correctly predicted]} of the
  user's targets; with `targets` and the NDCGs these are every figure's sufficient statistics, so
  pooled figures of any re-weighting of users follow without re-scoring (bgen_assets/intervals.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, precision_score, recall_score

from bgen_assets.predictors.core import Predictions

METRICS = ("precision", "recall", "ndcg@3", "ndcg@5", "anchor_f1", "tail_f1")
COUNTS = ("targets", "ranked_intents", "predicted_intents")


def anchor_intents(counts: pd.Series | Iterable[str], share: float = 0.8) -> list[str]:
    """The most frequent intents (count descending, then name) until their events reach `share`
    of all events. `counts`: intent -> count, or the intents of the events themselves."""
    if not isinstance(counts, pd.Series) or counts.dtype == object:
        counts = pd.Series(list(counts)).value_counts()
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    total, covered, anchors = sum(c for _, c in ordered), 0, []
    for intent, count in ordered:
        if covered >= share * total:
            break
        anchors.append(intent)
        covered += count
    return anchors


def ndcg_at_k(scores: np.ndarray, true_index: np.ndarray, k: int) -> np.ndarray:
    """Per-row NDCG@k of the true column, ties as the expected gain over random tie orders."""
    scores = np.asarray(scores, dtype=float)
    true_index = np.asarray(true_index)
    true_score = scores[np.arange(len(scores)), true_index][:, None]
    higher = (scores > true_score).sum(axis=1)
    tied = (scores == true_score).sum(axis=1)              # includes the true intent itself
    ranks = np.arange(1, scores.shape[1] + 1)
    gain = np.where(ranks <= k, 1 / np.log2(1 + ranks), 0.0)
    occupied = (ranks[None, :] > higher[:, None]) & (ranks[None, :] <= (higher + tied)[:, None])
    return (gain[None, :] * occupied).sum(axis=1) / tied


def score(y_true: list[str], y_pred: list[str], scores: np.ndarray, intents: list[str],
          anchors: list[str]) -> dict[str, float]:
    """All METRICS for one set of targets; targets whose intent is not in `intents` count as
    misses in precision/recall and get NDCG 0."""
    if len(y_true) == 0:
        return {name: float("nan") for name in METRICS} | dict.fromkeys(COUNTS, 0) | {"ranked_intents": len(intents)}
    position = {intent: i for i, intent in enumerate(intents)}
    known = np.array([t in position for t in y_true])
    true_index = np.array([position.get(t, 0) for t in y_true])
    tails = [i for i in intents if i not in set(anchors)]
    figures = {
        "precision": precision_score(y_true, y_pred, labels=intents, average="macro", zero_division=0),
        "recall": recall_score(y_true, y_pred, labels=intents, average="macro", zero_division=0),
        "ndcg@3": np.mean(ndcg_at_k(scores, true_index, 3) * known),
        "ndcg@5": np.mean(ndcg_at_k(scores, true_index, 5) * known),
        "anchor_f1": f1_score(y_true, y_pred, labels=anchors, average="macro", zero_division=0) if anchors else np.nan,
        "tail_f1": f1_score(y_true, y_pred, labels=tails, average="macro", zero_division=0) if tails else np.nan,
    }
    return {name: float(value) for name, value in figures.items()} | {
        "targets": len(y_true), "ranked_intents": len(intents), "predicted_intents": len(set(y_pred))}


def evaluate(predictions: Predictions, anchors: list[str]) -> tuple[dict[str, float], pd.DataFrame]:
    """(pooled figures over all targets, one row of figures per user)."""
    frame = predictions.frame.reset_index(drop=True)

    def figures(rows: pd.Index) -> dict[str, float]:
        return score(frame.loc[rows, "intent"].tolist(), frame.loc[rows, "predicted"].tolist(),
                     predictions.scores[rows], predictions.intents, anchors)

    per_user = pd.DataFrame([{"user_id": user, **figures(rows), "intent_counts": intent_counts(frame.loc[rows])}
                             for user, rows in frame.groupby("user_id", sort=True).groups.items()],
                            columns=["user_id", *METRICS, *COUNTS, "intent_counts"])
    return figures(frame.index), per_user


def intent_counts(rows: pd.DataFrame) -> str:
    """JSON {intent: [true, predicted, correctly predicted]} over the rows' targets (intents that occur)."""
    true, predicted = rows["intent"].value_counts(), rows["predicted"].value_counts()
    hits = rows.loc[rows["intent"] == rows["predicted"], "intent"].value_counts()
    return json.dumps({intent: [int(true.get(intent, 0)), int(predicted.get(intent, 0)), int(hits.get(intent, 0))]
                       for intent in sorted(set(true.index) | set(predicted.index))})
