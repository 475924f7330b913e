"""95% intervals of the utility tables' figures (bgen_assets/results.py): a paired bootstrap
over the scored users and the training seeds.

Every figure is a function of per-user sufficient statistics (a per-user score row's `targets`,
NDCGs and `intent_counts`), so a replicate re-weights users instead of re-scoring predictions.
One replicate draws the scored users with replacement and the seeds with replacement, the same
draw for every arm (scenario and training data) of an experiment: a change compares both arms on
the same users and seeds (paired). A replicate's figure is the mean over its drawn seeds; the
interval is the 2.5th to 97.5th percentile over REPLICATES replicates, and the point figure the
mean over seeds of the figure pooled over all scored users. The figures assume every target's
intent is one the predictor ranks (true of the experiments: their intents are the dataset's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

REPLICATES = 2000
LEVEL = 0.95
FIGURES = ("precision", "recall", "ndcg@3", "ndcg@5")


@dataclass
class Arm:
    """One arm's per-seed, per-user statistics on a common user axis."""

    targets: np.ndarray               # [seeds, users]
    ndcg: dict[str, np.ndarray]       # "ndcg@k" -> [seeds, users] sums over the user's targets
    counts: np.ndarray                # [seeds, users, intents, 3]: true, predicted, correctly predicted
    ranked_intents: int

    def figures(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Each figure pooled over users weighted by `weights` [replicates, users]: [replicates, seeds]."""
        targets = np.einsum("bu,su->bs", weights, self.targets)
        counts = np.einsum("bu,suic->bsic", weights, self.counts)
        true, predicted, hits = counts[..., 0], counts[..., 1], counts[..., 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            figures = {
                "precision": np.where(predicted > 0, hits / predicted, 0).sum(-1) / self.ranked_intents,
                "recall": np.where(true > 0, hits / true, 0).sum(-1) / self.ranked_intents,
                **{name: np.einsum("bu,su->bs", weights, sums) / targets for name, sums in self.ndcg.items()},
            }
        return figures


def arm(per_user: pd.DataFrame, users: list[str], seeds: list[int], intents: list[str]) -> Arm:
    """An arm from its per-user score rows (columns seed, user_id, targets, ranked_intents, ndcg@k,
    intent_counts) laid on the given users, seeds and intents axes (a missing user scores nothing)."""
    targets = np.zeros((len(seeds), len(users)))
    ndcg = {name: np.zeros_like(targets) for name in FIGURES if name.startswith("ndcg")}
    counts = np.zeros((len(seeds), len(users), len(intents), 3))
    seed_index, user_index = {s: i for i, s in enumerate(seeds)}, {u: i for i, u in enumerate(users)}
    intent_index = {intent: i for i, intent in enumerate(intents)}
    for row in per_user.to_dict("records"):
        s, u = seed_index.get(row["seed"]), user_index.get(row["user_id"])
        if s is None or u is None or not row["targets"]:
            continue
        targets[s, u] = row["targets"]
        for name in ndcg:
            ndcg[name][s, u] = row[name] * row["targets"]
        for intent, values in json.loads(row["intent_counts"]).items():
            counts[s, u, intent_index[intent]] = values
    return Arm(targets, ndcg, counts, int(per_user["ranked_intents"].max()))


@dataclass
class Estimate:
    point: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


class PairedBootstrap:
    """The replicates of one experiment: every arm is evaluated on the same draws."""

    def __init__(self, per_user: pd.DataFrame, replicates: int = REPLICATES, seed: int = 0):
        """per_user: the experiment's per-user score rows of every arm (columns scenario, generator,
        seed, user_id, ...). Seeds: those every arm was trained with."""
        self.rows = per_user
        self.users = sorted(per_user["user_id"].unique())
        arms = per_user.groupby(["scenario", "generator"])["seed"]
        self.seeds = sorted(set.intersection(*(set(seeds) for _, seeds in arms))) if len(per_user) else []
        self.intents = sorted({intent for counts in per_user["intent_counts"] for intent in json.loads(counts)})
        rng = np.random.default_rng(seed)
        self.weights = rng.multinomial(len(self.users), np.full(len(self.users), 1 / max(len(self.users), 1)),
                                       size=replicates).astype(float)
        self.seed_draws = rng.integers(0, max(len(self.seeds), 1), size=(replicates, len(self.seeds)))
        self._figures: dict[tuple[str, str], tuple[dict[str, float], dict[str, np.ndarray]]] = {}

    def arm(self, scenario: str, generator: str) -> Arm:
        chosen = self.rows[(self.rows["scenario"] == scenario) & (self.rows["generator"] == generator)]
        return arm(chosen, self.users, self.seeds, self.intents)

    def figures(self, key: tuple[str, str]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """(point figures: mean over seeds, all users; replicate figures: mean over drawn seeds), once per arm."""
        if key not in self._figures:
            chosen = self.arm(*key)
            point = {name: float(values.mean()) for name, values in chosen.figures(np.ones((1, len(self.users)))).items()}
            rows = np.arange(len(self.weights))[:, None]
            self._figures[key] = point, {name: values[rows, self.seed_draws].mean(axis=1)
                                         for name, values in chosen.figures(self.weights).items()}
        return self._figures[key]

    def estimate(self, combine, *arms: tuple[str, str]) -> dict[str, Estimate]:
        """Per figure: combine(figure of arm 1, figure of arm 2, ...) with its interval, e.g.
        `estimate(lambda x: x, arm)` for a score, a relative change of two arms, a replacement rate."""
        figures = [self.figures(key) for key in arms]
        tail = 100 * (1 - LEVEL) / 2
        estimates = {}
        for name in FIGURES:
            with np.errstate(invalid="ignore", divide="ignore"):
                point = float(combine(*(np.float64(point[name]) for point, _ in figures)))
                replicated = combine(*(values[name] for _, values in figures))
            finite = replicated[np.isfinite(replicated)]
            low, high = (np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan))
            estimates[name] = Estimate(point, float(low), float(high))
        return estimates
