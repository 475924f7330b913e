"""The paper's result tables (NOTES.md section 3) from the pooled predictor scores of every
experiment of a dataset (rows of `DS.NAME_real` and `DS.NAME_with_GEN` whose user_id is `all`).

  Table 1, pretraining augmentation: real only vs real + each generator; change in % of real only.
  Table 2, fine-tuning replacement: pretrained, real-finetuned, each generator's synthetic-finetuned;
           replacement rate = (synthetic - pretrained) / (real - pretrained), in %.
  Table 3, fine-tuning augmentation: limited real vs limited real + each generator; change in %.
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


def _rows(pooled: pd.DataFrame, experiment: str, scenario: str, generator: str | None = None) -> pd.DataFrame:
    chosen = pooled[(pooled["experiment"] == experiment) & (pooled["scenario"] == scenario)]
    return chosen if generator is None else chosen[chosen["generator"] == generator]


def _row(experiment: str, label: str, figures: pd.Series, kind: str = "score", **extra) -> dict:
    return {"experiment": experiment, "row": label, "kind": kind, **{m: float(figures[m]) for m in TABLE_METRICS}, **extra}


def utility_tables(scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The three tables, each with columns experiment, row, kind (score | change_% |
    replacement_rate_%), the metrics, and users_with_data for generator rows."""
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
        tables["pretraining_augmentation"].append(_row(experiment, "real only", base))
        tables["finetuning_replacement"] += [_row(experiment, "pretrained", base), _row(experiment, "real-finetuned", finetuned)]
        tables["finetuning_augmentation"].append(_row(experiment, "limited real", limited))
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
                tables[table].append(_row(experiment, label, figures, users_with_data=int(figures["users_with_data"])))
                metric_columns = list(TABLE_METRICS)
                if reference is not None:
                    change = _percent(figures[metric_columns].astype(float), reference[metric_columns].astype(float))
                    tables[table].append(_row(experiment, f"change vs {reference_label(table)}", change, "change_%"))
                else:
                    rate = 100 * (figures[metric_columns].astype(float) - base[metric_columns].astype(float)) / (
                        finetuned[metric_columns].astype(float) - base[metric_columns].astype(float)).replace(0, np.nan)
                    tables[table].append(_row(experiment, "replacement rate", rate, "replacement_rate_%"))
    return {name: pd.DataFrame(rows, columns=["experiment", "row", "kind", *TABLE_METRICS, "users_with_data"])
            for name, rows in tables.items()}


def reference_label(table: str) -> str:
    return "real only" if table == "pretraining_augmentation" else "limited real"


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: scores to 3 decimals, changes and rates in % to 1 decimal."""
    shown = table.copy()
    for metric in TABLE_METRICS:
        shown[metric] = [("-" if pd.isna(v) else f"{v:+.1f}%" if kind != "score" else f"{v:.3f}")
                         for v, kind in zip(table[metric], table["kind"])]
    shown["users_with_data"] = table["users_with_data"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    return shown.drop(columns="kind")


def markdown(table: pd.DataFrame) -> str:
    return formatted(table).to_markdown(index=False)
