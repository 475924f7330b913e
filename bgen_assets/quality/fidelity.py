"""Fidelity of synthetic weeks to the real data they stand in for (paper Table 4 metrics).

Inputs are event frames with `user_id, ts, weekday, time_slot, location, intent`; a real frame
gets its `week` (Monday, YYYY-MM-DD) from `ts`, a synthetic frame carries `target_week` (the
week it stands in for, conditioning week + 7 days) and may carry `sample`: the sampled weeks of
one target week are synthetic weeks of their own. What each metric compares:

- level `all` (the paper's population level): every synthetic week against every real week of
  the users the generator wrote weeks for; level `user`: one user's synthetic weeks against
  all of that user's real weeks.
- KS_P: p-value of the two-sample Kolmogorov-Smirnov test (scipy `ks_2samp`) per feature:
  time of week in minutes (weekday * MINUTES_PER_DAY + start of the event's slot), events per week (weeks
  with at least one event), inter-event gap in minutes (consecutive events of one week).
  Higher = the samples are less distinguishable.
- BLEU: corpus BLEU (sacrebleu, 4-grams, 0..1 rather than sacrebleu's 0..100) with one
  "sentence" per synthetic week and, as its one reference, the user's real week `target_week`
  (weeks whose real counterpart has no events are left out). An event is one token, its intent
  (the behaviour b of the paper's event tuple; whitespace replaced by `_`, tokenizer `none`), in
  time order. Why not finer tokens: on Tokyo, tokens `d{weekday}_t{slot}_{location}` gave BLEU
  0.000 for the Markov baseline and 0.001 even for copying the previous real week, and location
  tokens 0.002 / 0.023, so they could not rank generators; intent tokens gave 0.11 for another
  user's week, 0.14 for Markov and 0.20 for the copy.
- BD, JSD: Bhattacharyya distance -ln(sum sqrt(p q)) and Jensen-Shannon divergence, base 2
  (the divergence, 0..1, i.e. the square of scipy's Jensen-Shannon *distance*), of the
  intent distribution and of the time-of-week distribution (7 x slots-per-day bins).
- Pass@1: share of generated weeks whose first answer validated (NaN for generators that make
  no LLM request); validity: share of user-weeks whose final answer was valid (status ok).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sacrebleu
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from bgen_assets.domain import MINUTES_PER_DAY, week_of

REAL_VS_REAL = "other_population_week"          # another real user's week: what real-vs-real closeness looks like
REAL_VS_REAL_FIGURES = ("jsd_intent", "jsd_time_of_week")


def at_real_vs_real_bar(overall: pd.DataFrame) -> pd.Series:
    """Per generator (`overall`: the `all` rows indexed by generator), whether its intent and
    time-of-week JSDs are at or below REAL_VS_REAL's; empty when that reference was not evaluated."""
    if REAL_VS_REAL not in overall.index:
        return pd.Series(dtype=bool)
    bar = overall.loc[REAL_VS_REAL, list(REAL_VS_REAL_FIGURES)]
    return (overall[list(REAL_VS_REAL_FIGURES)] <= bar).all(axis=1).drop(REAL_VS_REAL)


METRICS = [
    "synthetic_weeks", "real_weeks", "synthetic_events_per_week", "real_events_per_week",
    "ks_p_time_of_week", "ks_p_events_per_week", "ks_p_inter_event_gap", "bleu",
    "bd_intent", "jsd_intent", "bd_time_of_week", "jsd_time_of_week", "pass_at_1", "validity",
]


def with_week(real: pd.DataFrame) -> pd.DataFrame:
    """Real events labelled with the Monday of their calendar week (like `DS.weekly_segments`)."""
    return real.assign(week=week_of(real["ts"]))


def time_of_week(events: pd.DataFrame, slot_minutes: int) -> np.ndarray:
    """Minutes since Monday 00:00 of each event's slot start."""
    return (events["weekday"] * MINUTES_PER_DAY + events["time_slot"] * slot_minutes).to_numpy(float)


def week_keys(events: pd.DataFrame, week: str) -> list[str]:
    """The columns naming one week of `events`: user_id, `week` and, in a synthetic frame that has
    it, `sample`."""
    return ["user_id", week, *(["sample"] if "sample" in events.columns else [])]


def events_per_week(events: pd.DataFrame, week: str) -> np.ndarray:
    return events.groupby(week_keys(events, week)).size().to_numpy(float)


def inter_event_gaps(events: pd.DataFrame, week: str) -> np.ndarray:
    """Minutes between consecutive events of the same user-week."""
    keys = week_keys(events, week)
    gaps = events.sort_values([*keys, "ts"]).groupby(keys)["ts"].diff().dropna()
    return (gaps.dt.total_seconds() / 60).to_numpy(float)


def ks_p(real: np.ndarray, synthetic: np.ndarray) -> float:
    if len(real) == 0 or len(synthetic) == 0:
        return float("nan")
    return float(ks_2samp(real, synthetic).pvalue)


def distribution(values: pd.Series, categories) -> np.ndarray:
    """Shares of `values` over `categories` (in that order); zeros when `values` is empty."""
    counts = values.value_counts().reindex(categories, fill_value=0).to_numpy(float)
    return counts / counts.sum() if counts.sum() else counts


def bhattacharyya_distance(p: np.ndarray, q: np.ndarray) -> float:
    """-ln of the Bhattacharyya coefficient; inf for disjoint supports, NaN for an empty side."""
    if not p.sum() or not q.sum():
        return float("nan")
    with np.errstate(divide="ignore"):
        return float(-np.log(min(np.sqrt(p * q).sum(), 1.0)) + 0.0)  # no -0.0 from rounding


def jensen_shannon_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0..1): scipy's distance squared."""
    if not p.sum() or not q.sum():
        return float("nan")
    return float(jensenshannon(p, q, base=2) ** 2)


def week_sentences(events: pd.DataFrame, week: str) -> pd.Series:
    """Token string per week (`week_keys`): each event's intent, in time order."""
    tokens = events.sort_values("ts").assign(token=lambda frame: frame["intent"].str.replace(r"\s+", "_", regex=True))
    return tokens.groupby(week_keys(events, week))["token"].agg(" ".join)


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0..1) of whitespace-tokenised sentences, one reference each."""
    if not hypotheses:
        return float("nan")
    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score / 100


def generation_quality(log: pd.DataFrame) -> dict[str, float]:
    requested = log[log["attempts"] > 0]
    return {
        "pass_at_1": float(requested["pass_at_1"].astype(float).mean()) if len(requested) else float("nan"),
        "validity": float((log["status"] == "ok").mean()) if len(log) else float("nan"),
    }


def compare(real: pd.DataFrame, synthetic: pd.DataFrame, sentences: pd.DataFrame,
            intents: list[str], slot_minutes: int) -> dict[str, float]:
    """Every distribution metric of one synthetic sample against one real sample.

    `real` carries `week`, `synthetic` carries `target_week`; `sentences` holds the token strings
    (`hypothesis`, `reference`) of the synthetic weeks that have a real counterpart."""
    bins = np.arange(7 * MINUTES_PER_DAY // slot_minutes) * slot_minutes
    real_tow, synthetic_tow = time_of_week(real, slot_minutes), time_of_week(synthetic, slot_minutes)
    real_counts, synthetic_counts = events_per_week(real, "week"), events_per_week(synthetic, "target_week")
    p_intent, q_intent = distribution(real["intent"], intents), distribution(synthetic["intent"], intents)
    p_tow, q_tow = distribution(pd.Series(real_tow), bins), distribution(pd.Series(synthetic_tow), bins)
    return {
        "synthetic_weeks": len(synthetic_counts),
        "real_weeks": len(real_counts),
        "synthetic_events_per_week": float(synthetic_counts.mean()) if len(synthetic_counts) else float("nan"),
        "real_events_per_week": float(real_counts.mean()) if len(real_counts) else float("nan"),
        "ks_p_time_of_week": ks_p(real_tow, synthetic_tow),
        "ks_p_events_per_week": ks_p(real_counts, synthetic_counts),
        "ks_p_inter_event_gap": ks_p(inter_event_gaps(real, "week"), inter_event_gaps(synthetic, "target_week")),
        "bleu": corpus_bleu(sentences["hypothesis"].tolist(), sentences["reference"].tolist()),
        "bd_intent": bhattacharyya_distance(p_intent, q_intent),
        "jsd_intent": jensen_shannon_divergence(p_intent, q_intent),
        "bd_time_of_week": bhattacharyya_distance(p_tow, q_tow),
        "jsd_time_of_week": jensen_shannon_divergence(p_tow, q_tow),
    }


def fidelity_table(real: pd.DataFrame, synthetic: pd.DataFrame, log: pd.DataFrame,
                   generator: str, slot_minutes: int) -> pd.DataFrame:
    """One row for all generated users together (level `all`) and one per user (level `user`),
    columns `generator, level, user_id` (empty for `all`) and METRICS."""
    generated_users = sorted(set(synthetic["user_id"]) | set(log["user_id"]))
    real = with_week(real[real["user_id"].isin(generated_users)])
    intents = sorted(set(real["intent"]) | set(synthetic["intent"]))
    # every sampled week of a target week has that real week as its reference
    sentences = (week_sentences(synthetic, "target_week").rename("hypothesis").reset_index()
                 .join(week_sentences(real, "week").rename("reference"), on=["user_id", "target_week"]).dropna())
    rows = [{"level": "all", "user_id": "", **compare(real, synthetic, sentences, intents, slot_minutes),
             **generation_quality(log)}]
    for user in generated_users:
        rows.append({"level": "user", "user_id": user,
                     **compare(real[real["user_id"] == user], synthetic[synthetic["user_id"] == user],
                               sentences[sentences["user_id"] == user], intents, slot_minutes),
                     **generation_quality(log[log["user_id"] == user])})
    table = pd.DataFrame(rows, columns=["level", "user_id", *METRICS])
    return table.assign(generator=generator)[["generator", "level", "user_id", *METRICS]]
