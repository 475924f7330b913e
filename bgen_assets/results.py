"""The BehaviorGen paper's result tables (Tables 1-3) from the predictor scores of every experiment
of a dataset (`DS.NAME_real` and `DS.NAME_with_GEN`), each figure with its 95% interval: a paired
bootstrap over the scored users and the training seeds (bgen_assets/intervals.py).

  Table 1, pretraining augmentation: real only vs real + each generator; change in % of real only.
  Table 2, fine-tuning replacement: pretrained, real-finetuned and its change, each generator's
           synthetic-finetuned; replacement rate = (synthetic - pretrained) / (real - pretrained), in %,
           left empty for a metric on which the real fine-tune's gain is not distinguishable from zero
           (a rate against a gain that may be zero has no bounded interval).
  Table 3, fine-tuning augmentation: limited real vs limited real + each generator; change in %.

A figure is the mean over training seeds of the figure pooled over all scored users' test
targets; a change or rate is computed from those means, and its interval from the same draws of
users and seeds for every arm. A figure the data cannot support is left empty with a note saying
why: a generator row of a scenario in which no user had synthetic weeks, and a change or rate
involving a predictor that ranks one intent first for every target (`predicted_intents` 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bgen_assets.intervals import LEVEL, Estimate, PairedBootstrap

TABLE_METRICS = ("precision", "recall", "ndcg@3", "ndcg@5")
TABLES = {
    "pretraining_augmentation": "Table 1. Pretraining augmentation",
    "finetuning_replacement": "Table 2. Fine-tuning replacement",
    "finetuning_augmentation": "Table 3. Fine-tuning augmentation",
}


def percent_change(new, reference):
    return 100 * (new - reference) / np.where(reference == 0, np.nan, reference)


def replacement_rate(synthetic, pretrained, real):
    difference = real - pretrained
    return 100 * (synthetic - pretrained) / np.where(difference == 0, np.nan, difference)


def as_is(figure):
    return figure


NOTE_ONE_INTENT, NOTE_NOT_COMPARABLE, NOTE_NO_SYNTHETIC = "one intent", "not comparable", "no synthetic data"
NOTE_NO_REAL_GAIN = "no real gain"
NOTES = {  # a row's note -> what it means (the report's legend)
    NOTE_ONE_INTENT: "the predictor ranks one intent first for every target, or recalls no better than doing so "
                     "(macro recall <= 1 / intents), with some training seed: its scores say nothing about the data "
                     "it was trained on",
    NOTE_NOT_COMPARABLE: "a change or rate involving such a predictor is not computed",
    NOTE_NO_SYNTHETIC: "no user in scope had synthetic weeks for this scenario, so every one kept a model trained "
                       "without them: not a result of the synthetic data",
    NOTE_NO_REAL_GAIN: "a replacement rate divides by the real fine-tune's gain over the pretrained model; on the "
                       "metrics shown as - that gain's interval includes zero, so the rate is undefined there",
}
DISTINGUISHABLE = "*"   # marks a change or rate whose interval excludes zero
TABLE_COLUMNS = ["experiment", "generator", "row", "kind", *(column for m in TABLE_METRICS for column in (m, f"{m}_low", f"{m}_high")),
                 "predicted_intents", "users_with_data", "seeds", "note"]


def collapsed(figures: pd.Series) -> bool:
    """Whether a predictor ranked the same intent first for every target, or scored no better on
    macro recall than doing so (1 / intents), whatever it was trained on."""
    return int(figures["predicted_intents"]) <= 1 or float(figures["recall"]) <= 1 / int(figures["ranked_intents"])


def _seed_summaries(pooled: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, generator) of an experiment's pooled rows over its seeds, for the notes:
    the fewest intents predicted and lowest recall of any seed."""
    return pooled.groupby(["scenario", "generator"]).agg(
        predicted_intents=("predicted_intents", "min"), recall=("recall", "min"),
        ranked_intents=("ranked_intents", "max"), users_with_data=("users_with_data", "max"), seeds=("seed", "nunique"))


def _row(experiment: str, label: str, estimates: dict[str, Estimate] | None, kind: str = "score", note: str = "",
         generator: str = "real", **extra) -> dict:
    values = {}
    for metric in TABLE_METRICS:
        estimate = (estimates or {}).get(metric, Estimate(np.nan, np.nan, np.nan))
        values |= {metric: estimate.point, f"{metric}_low": estimate.low, f"{metric}_high": estimate.high}
    return {"experiment": experiment, "generator": generator, "row": label, "kind": kind, **values, "note": note,
            **extra}


def utility_tables(scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The three tables, each with columns experiment, row, kind (score | change_% |
    replacement_rate_%), per metric its figure and 95% interval (`METRIC_low`, `METRIC_high`),
    predicted_intents, users_with_data and seeds for score rows, and a note where a figure is not
    shown: a scenario without synthetic data, or a change or rate involving a predictor that
    collapsed to one intent (NOTE_* above)."""
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    for experiment in sorted(scores["experiment"].unique()):
        rows = scores[scores["experiment"] == experiment]
        summaries = _seed_summaries(rows[rows["user_id"] == "all"])
        if ("pretraining", "real") not in summaries.index:
            continue
        bootstrap = PairedBootstrap(rows[rows["user_id"] != "all"])
        base, finetuned, limited = ("pretraining", "real"), ("finetune", "real"), ("limited", "real")

        def score_row(label: str, arm: tuple[str, str], **extra) -> dict:
            summary = summaries.loc[arm]
            return _row(experiment, label, bootstrap.estimate(as_is, arm),
                        note=NOTE_ONE_INTENT if collapsed(summary) else "", generator=arm[1],
                        predicted_intents=int(summary["predicted_intents"]), seeds=int(summary["seeds"]), **extra)

        def relative_row(label: str, kind: str, combine, arms: list[tuple[str, str]],
                         defined: frozenset[str] = frozenset(TABLE_METRICS)) -> dict:
            """A change or rate of the first arm (a generator's) against the others, on the `defined` metrics."""
            if any(collapsed(summaries.loc[arm]) for arm in arms):
                return _row(experiment, label, None, kind, NOTE_NOT_COMPARABLE, arms[0][1])
            estimates = {metric: estimate for metric, estimate in bootstrap.estimate(combine, *arms).items()
                         if metric in defined}
            note = "" if defined >= set(TABLE_METRICS) else NOTE_NO_REAL_GAIN
            return _row(experiment, label, estimates, kind, note, generator=arms[0][1])

        real_gain = relative_row("change vs pretrained", "change_%", percent_change, [finetuned, base])
        gained = frozenset(metric for metric in TABLE_METRICS
                  if Estimate(*(real_gain[c] for c in (metric, f"{metric}_low", f"{metric}_high"))).excludes_zero)
        tables["pretraining_augmentation"].append(score_row("real only", base))
        tables["finetuning_replacement"] += [score_row("pretrained", base), score_row("real-finetuned", finetuned),
                                             real_gain]
        tables["finetuning_augmentation"].append(score_row("limited real", limited))
        generators = sorted(set(summaries.index.get_level_values("generator")) - {"real"})
        for generator in generators:
            for table, scenario, reference, label in (
                ("pretraining_augmentation", "pretraining", base, f"real + {generator}"),
                ("finetuning_replacement", "replacement", None, f"{generator}-finetuned"),
                ("finetuning_augmentation", "augmentation", limited, f"limited real + {generator}"),
            ):
                arm = (scenario, generator)
                if arm not in summaries.index:
                    continue
                users = int(summaries.loc[arm, "users_with_data"])
                if users == 0:  # every user kept the model without synthetic data: not a result of it
                    tables[table].append(_row(experiment, label, None, note=NOTE_NO_SYNTHETIC, generator=generator,
                                              users_with_data=0))
                    continue
                tables[table].append(score_row(label, arm, users_with_data=users))
                if reference is not None:
                    tables[table].append(relative_row(f"change vs {reference_label(table)}", "change_%", percent_change,
                                                      [arm, reference]))
                else:
                    tables[table].append(relative_row("replacement rate", "replacement_rate_%", replacement_rate,
                                                      [arm, base, finetuned], defined=gained))
    counts = {"predicted_intents": "Int64", "users_with_data": "Int64", "seeds": "Int64"}  # empty where not a score
    return {name: pd.DataFrame(rows, columns=TABLE_COLUMNS).astype(counts) for name, rows in tables.items()}


def best_generators(tables: dict[str, pd.DataFrame], metric: str = "ndcg@5") -> dict[str, dict[str, dict]]:
    """Per table and experiment, the generator whose change (Tables 1, 3) or replacement rate
    (Table 2) in `metric` is highest, with its interval and whether it excludes zero."""
    best: dict[str, dict[str, dict]] = {}
    for name, table in tables.items():
        relative = table[(table["kind"] != "score") & (table["generator"] != "real") & table[metric].notna()]
        for experiment, rows in relative.groupby("experiment"):
            row = rows.loc[rows[metric].idxmax()]
            estimate = Estimate(row[metric], row[f"{metric}_low"], row[f"{metric}_high"])
            best.setdefault(name, {})[experiment] = {
                "generator": row["generator"], "kind": row["kind"], metric: round(estimate.point, 2),
                "low": round(estimate.low, 2), "high": round(estimate.high, 2), "excludes_zero": estimate.excludes_zero}
    return best


def reference_label(table: str) -> str:
    return "real only" if table == "pretraining_augmentation" else "limited real"


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: scores to 3 decimals, changes and rates in % to 1 decimal, each with
    its interval in brackets; a change or rate whose interval excludes zero is marked `*`."""
    shown = table[[c for c in TABLE_COLUMNS if not c.endswith(("_low", "_high"))]].copy()
    for metric in TABLE_METRICS:
        shown[metric] = [_shown(Estimate(*values), kind) for values, kind in
                         zip(table[[metric, f"{metric}_low", f"{metric}_high"]].to_numpy(float), table["kind"])]
    for count in ("predicted_intents", "users_with_data", "seeds"):
        shown[count] = table[count].map(lambda v: "" if pd.isna(v) else str(int(v)))
    return shown.drop(columns=["kind", "generator"])


def best_generator_lines(tables: dict[str, pd.DataFrame], metric: str = "ndcg@5") -> list[str]:
    """`best_generators` as sentences for the report, one per table and experiment."""
    lines = []
    for name, per_experiment in best_generators(tables, metric).items():
        for experiment, best in per_experiment.items():
            shown = _shown(Estimate(best[metric], best["low"], best["high"]), best["kind"])
            measure = "replacement rate" if best["kind"] == "replacement_rate_%" else "change"
            lines.append(f"{TABLES[name]}, {experiment}: {best['generator']} ({measure} in {metric} {shown})")
    return lines


def _shown(estimate: Estimate, kind: str) -> str:
    if pd.isna(estimate.point):
        return "-"
    if kind == "score":
        return f"{estimate.point:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"
    mark = DISTINGUISHABLE if estimate.excludes_zero else ""
    return f"{estimate.point:+.1f}% [{estimate.low:+.1f}, {estimate.high:+.1f}]{mark}"


def interval_legend() -> str:
    return (f"Brackets: {LEVEL:.0%} interval (paired bootstrap over the scored users and the training seeds); "
            f"{DISTINGUISHABLE}: a change or rate whose interval excludes zero.")


def tracked_figures(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Every figure shown and its interval bounds as MLflow metrics: TABLE/EXPERIMENT/ROW/METRIC[_low|_high]."""
    figures = {}
    for name, table in tables.items():
        for row in table.to_dict("records"):
            label = row["row"].replace(" + ", " plus ")
            for metric in TABLE_METRICS:
                for column in (metric, f"{metric}_low", f"{metric}_high"):
                    if pd.notna(row[column]):
                        figures[f"{name}/{row['experiment']}/{label}/{column}"] = float(row[column])
    return figures


def markdown(table: pd.DataFrame) -> str:
    return formatted(table).to_markdown(index=False)
