"""Privacy of synthetic weeks (paper Appendix A.5): uniqueness, membership inference and a
per-user differential-privacy estimate, all built on one overlap ratio between weeks.

Alignment. A week is laid out on its 7 x slots-per-day time slots (slot index = weekday *
slots_per_day + time_slot), so a synthetic week and a real week are compared Monday 00:00 to
Monday 00:00, whatever their calendar dates. A slot holds the location of its first event
(earliest ts, ties by location name); later events in the same slot are ignored. The overlap
ratio of weeks a and b is
    slots where both hold the same location / slots occupied in a or in b (the union),
so a copied week scores 1, a week sharing nothing 0, and neither a sparse nor a dense week can
score high by its size alone. All pairs are computed at once as sparse one-hot products.

Uniqueness: for every synthetic week, its overlap with each real week of every user of the
dataset; reported as the best (top-1) and the mean of the 3 and 5 best, their distribution, and
the share of synthetic weeks whose top-1 reaches a level (the privacy gate uses 0.5).

Membership inference: the attacker holds the synthetic table and a real user-week and asks
"did this week's user feed the generator?". Members: the conditioning weeks of the users the
generator wrote weeks for; non-members: as many weeks (seeded sample) of users it did not see.
Features per real week: the k best overlap ratios with the synthetic weeks of each generation
run (one run: its top-k vector; several runs, e.g. seeds: the vectors side by side). Success
rate = accuracy of logistic regression, an RBF SVM, k-NN and a random forest under stratified
cross-validation grouped by user (no user on both sides of a split); NaN when either class has
fewer than two users (e.g. when every user of the dataset was generated).

DP estimate (our reading of the paper's TensorFlow-Privacy step): per generated user u, the
overlap of each of u's conditioning weeks with each synthetic week generated from it (with u)
against its overlap with the synthetic weeks of the other users (without u) are taken as two
Gaussians with a pooled standard deviation sigma; mu = |mean_in - mean_out| / sigma is read as
a mu-GDP guarantee and converted to epsilon at delta = 1e-5 by solving
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr

from bgen_assets.domain import MINUTES_PER_DAY, slots_per_day
from bgen_assets.quality.fidelity import week_keys, with_week

TOP_K = (1, 3, 5)
DELTA = 1e-5
CLASSIFIERS = ("logistic_regression", "svm", "knn", "random_forest")


@dataclass
class WeekGrid:
    """Weeks as rows of slot-aligned locations: `keys` (user_id, week and a synthetic week's
    sample) per row, `cells` the sparse one-hot (slot, location) matrix, `occupied` the sparse
    slot-occupancy matrix."""

    keys: pd.DataFrame
    cells: sparse.csr_matrix
    occupied: sparse.csr_matrix


def week_grid(events: pd.DataFrame, week: str, locations: dict[str, int], slot_minutes: int) -> WeekGrid:
    """The grid of every week (`week_keys`) of `events`; `locations` maps location -> column code."""
    slots = 7 * MINUTES_PER_DAY // slot_minutes
    on = week_keys(events, week)
    first = (events.assign(slot=events["weekday"] * slots_per_day(slot_minutes) + events["time_slot"])
             .sort_values(["ts", "location"]).drop_duplicates([*on, "slot"]))
    keys = first[on].drop_duplicates().sort_values(on).reset_index(drop=True)
    row = pd.MultiIndex.from_frame(keys).get_indexer(pd.MultiIndex.from_frame(first[on]))
    slot = first["slot"].to_numpy()
    location = first["location"].map(locations).to_numpy()
    ones = np.ones(len(first), np.float32)
    cells = sparse.csr_matrix((ones, (row, slot * len(locations) + location)), shape=(len(keys), slots * len(locations)))
    occupied = sparse.csr_matrix((ones, (row, slot)), shape=(len(keys), slots))
    return WeekGrid(keys.rename(columns={week: "week"}), cells, occupied)


def overlap_matrix(a: WeekGrid, b: WeekGrid) -> np.ndarray:
    """Overlap ratio of every week of `a` (rows) with every week of `b` (columns), float32."""
    same = (a.cells @ b.cells.T).toarray()
    both = (a.occupied @ b.occupied.T).toarray()
    union = np.asarray(a.occupied.sum(1)) + np.asarray(b.occupied.sum(1)).T - both
    return np.divide(same, union, out=np.zeros_like(same), where=union > 0)


def grids(real: pd.DataFrame, synthetic: pd.DataFrame, slot_minutes: int) -> tuple[WeekGrid, WeekGrid]:
    """Grids of the real weeks (by calendar week) and the synthetic weeks (by conditioning week and sample)."""
    codes = {name: i for i, name in enumerate(sorted(set(real["location"]) | set(synthetic["location"])))}
    return (week_grid(with_week(real), "week", codes, slot_minutes),
            week_grid(synthetic, "week", codes, slot_minutes))


def top_k_vector(overlaps: np.ndarray, k: int = 5) -> np.ndarray:
    """Per row, its k largest values in decreasing order (NaN where a row has fewer than k).
    k passes of argmax: far faster than a partition on rows that are mostly ties at zero."""
    rows, work = np.arange(overlaps.shape[0]), overlaps.copy()
    best = np.full((overlaps.shape[0], k), np.nan, dtype=overlaps.dtype)
    for rank in range(min(k, overlaps.shape[1])):
        column = work.argmax(1)
        best[:, rank] = work[rows, column]
        work[rows, column] = -np.inf
    return best


def uniqueness(overlaps: np.ndarray, synthetic_keys: pd.DataFrame) -> pd.DataFrame:
    """Per synthetic week (`overlaps` rows; columns = real weeks): mean overlap with its 1, 3 and
    5 most similar real weeks."""
    best = top_k_vector(overlaps, max(TOP_K))
    return synthetic_keys.assign(**{f"top{k}_overlap": np.nanmean(best[:, :k], axis=1) for k in TOP_K})


def membership_samples(real_keys: pd.DataFrame, synthetic_keys: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Rows of `real_keys` used by the attack, with `member` (bool): the conditioning weeks of
    the generated users, and as many weeks of other users (seeded sample, fewer if there are not).
    When every user was generated (a full-scale table) there are no other users: the non-members
    are then the weeks no generation was conditioned on (individual users' validation and test
    weeks), against as many conditioning weeks of the same users. Those non-members are later
    weeks, so an attack may also detect drift over time: an accuracy that over- rather than
    under-states what leaks."""
    conditioning = set(map(tuple, synthetic_keys[["user_id", "week"]].to_numpy()))
    is_member = pd.Series([key in conditioning for key in map(tuple, real_keys[["user_id", "week"]].to_numpy())],
                          index=real_keys.index)
    outsiders = real_keys[~real_keys["user_id"].isin(set(synthetic_keys["user_id"]))]
    if len(outsiders):
        others = outsiders.sample(n=min(int(is_member.sum()), len(outsiders)), random_state=seed)
        return pd.concat([real_keys[is_member].assign(member=True), others.assign(member=False)])
    unconditioned = real_keys[~is_member]
    members = real_keys[is_member & real_keys["user_id"].isin(set(unconditioned["user_id"]))]
    count = min(len(members), len(unconditioned))
    return pd.concat([members.sample(n=count, random_state=seed).sort_index().assign(member=True),
                      unconditioned.sample(n=count, random_state=seed).sort_index().assign(member=False)])


def _classifiers(seed: int, neighbors: int = 5) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression()),
        "svm": make_pipeline(StandardScaler(), SVC(random_state=seed)),
        "knn": make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=neighbors)),
        "random_forest": RandomForestClassifier(n_estimators=100, random_state=seed),
    }


def membership_inference(features: np.ndarray, member: np.ndarray, users: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Cross-validated accuracy of each attack classifier (NaN when not evaluable)."""
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    folds = min(5, *(len(set(users[member == label])) for label in (True, False)))
    if folds < 2:
        return dict.fromkeys(CLASSIFIERS, float("nan"))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    smallest_training_fold = min(len(train) for train, _ in splitter.split(features, member, groups=users))
    return {name: float(cross_val_score(model, features, member, groups=users, cv=splitter, scoring="accuracy").mean())
            for name, model in _classifiers(seed, neighbors=min(5, smallest_training_fold)).items()}


def gdp_delta(epsilon: float, mu: float) -> float:
    """delta(eps) of a mu-GDP mechanism (Dong, Roth and Su 2019, Corollary 2.13)."""
    return float(ndtr(-epsilon / mu + mu / 2) - np.exp(epsilon + log_ndtr(-epsilon / mu - mu / 2)))


def gdp_epsilon(mu: float, delta: float = DELTA) -> float:
    """The smallest epsilon with delta(eps) <= delta for a mu-GDP mechanism."""
    if np.isnan(mu):
        return float("nan")
    if np.isinf(mu):
        return float("inf")
    if mu == 0 or gdp_delta(0.0, mu) <= delta:
        return 0.0
    upper = 1.0
    while gdp_delta(upper, mu) > delta:
        upper *= 2
    return float(brentq(lambda eps: gdp_delta(eps, mu) - delta, 0.0, upper, xtol=1e-10))


def gaussian_mu(inside: np.ndarray, outside: np.ndarray) -> float:
    """|mean_in - mean_out| / pooled standard deviation (inf when both samples are constant and differ)."""
    if len(inside) == 0 or len(outside) == 0:
        return float("nan")
    gap = abs(inside.mean() - outside.mean())
    sigma = np.sqrt((((inside - inside.mean()) ** 2).sum() + ((outside - outside.mean()) ** 2).sum())
                    / max(len(inside) + len(outside) - 2, 1))
    if sigma == 0:
        return 0.0 if gap == 0 else float("inf")
    return float(gap / sigma)


def dp_estimates(overlaps: np.ndarray, real_keys: pd.DataFrame, synthetic_keys: pd.DataFrame) -> pd.DataFrame:
    """Per generated user: mean overlap with (own synthetic weeks, each against the week it was
    generated from) and without (other users' synthetic weeks) that user, mu and epsilon at DELTA.
    `overlaps`: synthetic x real weeks."""
    real_index = {key: i for i, key in enumerate(map(tuple, real_keys[["user_id", "week"]].to_numpy()))}
    synthetic_users = synthetic_keys["user_id"].to_numpy()
    rows = []
    for user in sorted(set(synthetic_users)):
        own = np.flatnonzero(synthetic_users == user)
        columns = [real_index.get((user, week), -1) for week in synthetic_keys["week"].iloc[own]]
        present = [(row, column) for row, column in zip(own, columns) if column >= 0]
        inside = np.array([overlaps[row, column] for row, column in present])
        outside = overlaps[np.ix_(np.flatnonzero(synthetic_users != user), [c for _, c in present])].ravel()
        mu = gaussian_mu(inside, outside)
        rows.append({"user_id": user, "dp_mean_in": inside.mean() if len(inside) else np.nan,
                     "dp_mean_out": outside.mean() if len(outside) else np.nan,
                     "dp_mu": mu, "dp_epsilon": gdp_epsilon(mu)})
    return pd.DataFrame(rows, columns=["user_id", "dp_mean_in", "dp_mean_out", "dp_mu", "dp_epsilon"])


def privacy_table(real: pd.DataFrame, runs: list[pd.DataFrame], generator: str, slot_minutes: int,
                  overlap_level: float = 0.5, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Uniqueness, membership inference and DP estimate of a synthetic table (`runs[0]`; further
    runs of the same generator, e.g. other seeds, only add attack features).

    Returns the table, with one row for all generated users (level `all`: uniqueness over all
    synthetic weeks, the attack, the largest epsilon) and one per generated user (level `user`:
    that user's synthetic weeks and epsilon), and the uniqueness of every synthetic week."""
    if runs[0].empty:
        return (pd.DataFrame([{"generator": generator, "level": "all", "user_id": "", "synthetic_weeks": 0,
                               "overlap_level": overlap_level, "mia_samples": 0}], columns=PRIVACY_COLUMNS),
                pd.DataFrame(columns=["user_id", "week", *(f"top{k}_overlap" for k in TOP_K)]))
    real_grid, synthetic_grid = grids(real, runs[0], slot_minutes)
    overlaps = overlap_matrix(synthetic_grid, real_grid)
    weeks = uniqueness(overlaps, synthetic_grid.keys)
    dp = dp_estimates(overlaps, real_grid.keys, synthetic_grid.keys)

    samples = membership_samples(real_grid.keys, synthetic_grid.keys, seed)
    sampled = WeekGrid(real_grid.keys.loc[samples.index], real_grid.cells[samples.index], real_grid.occupied[samples.index])
    features = np.hstack([top_k_vector(overlaps.T[samples.index])] + [
        top_k_vector(overlap_matrix(sampled, grids(real, run, slot_minutes)[1])) for run in runs[1:]])
    features = np.nan_to_num(features)
    attack = membership_inference(features, samples["member"].to_numpy(), samples["user_id"].to_numpy(), seed)

    def summary(group: pd.DataFrame) -> dict:
        top1 = group["top1_overlap"]
        return {"synthetic_weeks": len(group),
                **{f"top{k}_overlap_mean": group[f"top{k}_overlap"].mean() for k in TOP_K},
                "top1_overlap_p50": top1.median(), "top1_overlap_p90": top1.quantile(0.9),
                "share_top1_at_least": (top1 >= overlap_level).mean() if len(group) else np.nan,
                "overlap_level": overlap_level}

    everyone = {"level": "all", "user_id": "", **summary(weeks),
                **{f"mia_{name}": value for name, value in attack.items()},
                "mia_accuracy": max(attack.values()), "mia_samples": len(samples),
                "dp_mean_in": dp["dp_mean_in"].mean(), "dp_mean_out": dp["dp_mean_out"].mean(),
                "dp_mu": dp["dp_mu"].max(), "dp_epsilon": dp["dp_epsilon"].max()}
    users = [{"level": "user", "user_id": user, **summary(group), "mia_samples": 0,
              **dp.set_index("user_id").loc[user].to_dict()} for user, group in weeks.groupby("user_id")]
    table = pd.DataFrame([everyone, *users], columns=PRIVACY_COLUMNS[1:]).assign(generator=generator)
    return table[PRIVACY_COLUMNS], weeks


PRIVACY_COLUMNS = [
    "generator", "level", "user_id", "synthetic_weeks", *(f"top{k}_overlap_mean" for k in TOP_K),
    "top1_overlap_p50", "top1_overlap_p90", "share_top1_at_least", "overlap_level",
    *(f"mia_{name}" for name in CLASSIFIERS), "mia_accuracy", "mia_samples",
    "dp_mean_in", "dp_mean_out", "dp_mu", "dp_epsilon",
]
