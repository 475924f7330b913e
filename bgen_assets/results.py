"""The BehaviorGen paper's result tables (Tables 1-3) from the pooled predictor scores of every
experiment of a dataset (rows of `DS.NAME_real` and `DS.NAME_with_GEN` whose user_id is `all`).

  Table 1, pretraining augmentation: real only vs real + each generator; change in % of real only.
  Table 2, fine-tuning replacement: pretrained, real-finetuned, each generator's synthetic-finetuned;
           replacement rate = (synthetic - pretrained) / (real - pretrained), in %.
  Table 3, fine-tuning augmentation: limited real vs limited real + each generator; change in %.

A figure the data cannot support is left empty with a note saying why: a generator row of a
scenario in which no user had synthetic weeks, and a change or rate involving a predictor that
ranks one intent first for every target (`predicted_intents` 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TABLE_METRICS = ("precision", "recall", "ndcg@3", "ndcg@5")
TABLES = {
    "pretraining_augmentation": "Table 1. Pretraining augmentation",
    "finetuning_replacement": "Table 2. Fine-tuning replacement",
    "finetuning_augmentation": "Table 3. Fine-tuning augmentation",
}


def _percent(new: pd.Series, reference: pd.Series) -> pd.Series:
    return 100 * (new - reference) / reference.replace(0, np.nan)


def _replacement_rate(synthetic: pd.Series, pretrained: pd.Series, real: pd.Series) -> pd.Series:
    return 100 * (synthetic - pretrained) / (real - pretrained).replace(0, np.nan)


def _rows(pooled: pd.DataFrame, experiment: str, scenario: str, generator: str | None = None) -> pd.DataFrame:
    chosen = pooled[(pooled["experiment"] == experiment) & (pooled["scenario"] == scenario)]
    return chosen if generator is None else chosen[chosen["generator"] == generator]


NOTE_ONE_INTENT, NOTE_NOT_COMPARABLE, NOTE_NO_SYNTHETIC = "one intent", "not comparable", "no synthetic data"
NOTES = {  # a row's note -> what it means (the report's legend)
    NOTE_ONE_INTENT: "the predictor ranks one intent first for every target, or recalls no better than doing so "
                     "(macro recall <= 1 / intents): its scores say nothing about the data it was trained on",
    NOTE_NOT_COMPARABLE: "a change or rate involving such a predictor is not computed",
    NOTE_NO_SYNTHETIC: "no user in scope had synthetic weeks for this scenario, so every one kept a model trained "
                       "without them: not a result of the synthetic data",
}
TABLE_COLUMNS = ["experiment", "row", "kind", *TABLE_METRICS, "predicted_intents", "users_with_data", "note"]


def collapsed(figures: pd.Series) -> bool:
    """Whether a predictor ranked the same intent first for every target, or scored no better on
    macro recall than doing so (1 / intents), whatever it was trained on."""
    return int(figures["predicted_intents"]) <= 1 or float(figures["recall"]) <= 1 / int(figures["ranked_intents"])


def _row(experiment: str, label: str, figures: pd.Series | None, kind: str = "score", note: str = "", **extra) -> dict:
    values = {m: float("nan") if figures is None else float(figures[m]) for m in TABLE_METRICS}
    return {"experiment": experiment, "row": label, "kind": kind, **values, "note": note, **extra}


def _score_row(experiment: str, label: str, figures: pd.Series, **extra) -> dict:
    return _row(experiment, label, figures, note=NOTE_ONE_INTENT if collapsed(figures) else "",
                predicted_intents=int(figures["predicted_intents"]), **extra)


def _relative_row(experiment: str, label: str, kind: str, compared: list[pd.Series], value) -> dict:
    """A change or rate between scores, left empty when one of them comes from a collapsed predictor."""
    if any(collapsed(figures) for figures in compared):
        return _row(experiment, label, None, kind, NOTE_NOT_COMPARABLE)
    metric_columns = list(TABLE_METRICS)
    return _row(experiment, label, value(*(figures[metric_columns].astype(float) for figures in compared)), kind)


def utility_tables(scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The three tables, each with columns experiment, row, kind (score | change_% |
    replacement_rate_%), the metrics, predicted_intents and users_with_data for score rows, and a
    note where a figure is not shown: a scenario without synthetic data, or a change or rate
    involving a predictor that collapsed to one intent (NOTE_* above)."""
    pooled = scores[scores["user_id"] == "all"]
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    for experiment in sorted(pooled["experiment"].unique()):
        generators = sorted(set(pooled.loc[pooled["experiment"] == experiment, "generator"]) - {"real"})
        base = _rows(pooled, experiment, "pretraining", "real")
        finetuned = _rows(pooled, experiment, "finetune", "real")
        limited = _rows(pooled, experiment, "limited", "real")
        if base.empty:
            continue
        base, finetuned, limited = base.iloc[0], finetuned.iloc[0], limited.iloc[0]
        tables["pretraining_augmentation"].append(_score_row(experiment, "real only", base))
        tables["finetuning_replacement"] += [_score_row(experiment, "pretrained", base),
                                             _score_row(experiment, "real-finetuned", finetuned)]
        tables["finetuning_augmentation"].append(_score_row(experiment, "limited real", limited))
        for generator in generators:
            for table, scenario, reference, label in (
                ("pretraining_augmentation", "pretraining", base, f"real + {generator}"),
                ("finetuning_replacement", "replacement", None, f"{generator}-finetuned"),
                ("finetuning_augmentation", "augmentation", limited, f"limited real + {generator}"),
            ):
                found = _rows(pooled, experiment, scenario, generator)
                if found.empty:
                    continue
                figures = found.iloc[0]
                users = int(figures["users_with_data"])
                if users == 0:  # every user kept the model without synthetic data: not a result of it
                    tables[table].append(_row(experiment, label, None, note=NOTE_NO_SYNTHETIC, users_with_data=0))
                    continue
                tables[table].append(_score_row(experiment, label, figures, users_with_data=users))
                if reference is not None:
                    tables[table].append(_relative_row(experiment, f"change vs {reference_label(table)}", "change_%",
                                                       [figures, reference], _percent))
                else:
                    tables[table].append(_relative_row(experiment, "replacement rate", "replacement_rate_%",
                                                       [figures, base, finetuned], _replacement_rate))
    counts = {"predicted_intents": "Int64", "users_with_data": "Int64"}  # integers, empty where not a score
    return {name: pd.DataFrame(rows, columns=TABLE_COLUMNS).astype(counts) for name, rows in tables.items()}


def reference_label(table: str) -> str:
    return "real only" if table == "pretraining_augmentation" else "limited real"


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: scores to 3 decimals, changes and rates in % to 1 decimal."""
    shown = table.copy()
    for metric in TABLE_METRICS:
        shown[metric] = [("-" if pd.isna(v) else f"{v:+.1f}%" if kind != "score" else f"{v:.3f}")
                         for v, kind in zip(table[metric], table["kind"])]
    for count in ("predicted_intents", "users_with_data"):
        shown[count] = table[count].map(lambda v: "" if pd.isna(v) else str(int(v)))
    return shown.drop(columns="kind")


def markdown(table: pd.DataFrame) -> str:
    return formatted(table).to_markdown(index=False)
