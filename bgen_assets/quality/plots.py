"""Evaluation figures as PNG bytes: the paper's case-study intent distributions of one user,
and bar charts of fidelity and utility per generator.

Each `*_figure` function returns a matplotlib Figure (so tests can read its labels). Figures
are made without pyplot, so no global backend or figure registry is involved and PNGs are
rendered by Agg; `png(figure)` renders one, `markdown_image(png)` embeds it in Dagster metadata."""

from __future__ import annotations

import base64
import io

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

FIDELITY_METRICS = {  # column of the fidelity table -> label (direction of better)
    "ks_p_time_of_week": "KS p, time of week (higher)",
    "ks_p_events_per_week": "KS p, events per week (higher)",
    "ks_p_inter_event_gap": "KS p, inter-event gap (higher)",
    "bleu": "BLEU (higher)",
    "bd_intent": "BD, intents (lower)",
    "jsd_intent": "JSD, intents (lower)",
    "bd_time_of_week": "BD, time of week (lower)",
    "jsd_time_of_week": "JSD, time of week (lower)",
}


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def markdown_image(data: bytes, title: str) -> str:
    return f"![{title}](data:image/png;base64,{base64.b64encode(data).decode()})"


def intent_distribution_figure(user_real: pd.Series, population: pd.Series, synthetic: pd.Series,
                               user: str, generator: str) -> Figure:
    """Share of each intent for one user's real events, the population users' real events and
    the user's synthetic events (intents in order of the user's real share)."""
    shares = pd.concat({f"user {user}, real": user_real.value_counts(normalize=True),
                        "population, real": population.value_counts(normalize=True),
                        f"user {user}, synthetic ({generator})": synthetic.value_counts(normalize=True)},
                       axis=1).fillna(0.0)
    shares = shares.sort_values(shares.columns[0], ascending=False)
    figure = Figure(figsize=(max(6.0, 0.6 * len(shares)), 4))
    axes = figure.subplots()
    width = 0.8 / shares.shape[1]
    positions = np.arange(len(shares))
    for i, column in enumerate(shares.columns):
        axes.bar(positions + (i - (shares.shape[1] - 1) / 2) * width, shares[column], width, label=column)
    axes.set_xticks(positions, shares.index, rotation=45, ha="right")
    axes.set_xlabel("intent")
    axes.set_ylabel("share of events")
    axes.set_title(f"Intent distribution of user {user}: real vs {generator}")
    axes.legend()
    return figure


def grouped_bars_figure(values: pd.DataFrame, title: str, ylabel: str, xlabel: str = "generator",
                        intervals: pd.DataFrame | None = None) -> Figure:
    """One panel per column of `values` (four panels a row), one bar per row (its index label);
    `intervals` (columns COLUMN_low, COLUMN_high, same rows) draws each bar's interval."""
    columns = list(values.columns)
    width = min(4, len(columns))
    height = -(-len(columns) // width)
    label_room = 0.07 * max(len(str(label)) for label in values.index)   # inches the 45-degree labels take
    figure = Figure(figsize=(2.8 * width + 1, (3.4 + label_room) * height), layout="constrained")
    panels = figure.subplots(height, width, squeeze=False).ravel()
    for unused in panels[len(columns):]:
        unused.remove()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for panel, column in zip(panels, columns):
        heights = values[column].to_numpy(float)
        errors = None if intervals is None else np.abs(
            intervals[[f"{column}_low", f"{column}_high"]].to_numpy(float).T - heights)
        bars = panel.bar(range(len(values)), heights, yerr=errors, capsize=3,
                         color=[colors[i % len(colors)] for i in range(len(values))])
        panel.set_xticks(range(len(values)), values.index, rotation=45, ha="right")
        panel.set_title(column, fontsize=9)
        panel.set_xlabel(xlabel)
        panel.set_ylabel(ylabel)
        panel.bar_label(bars, fmt="%.3g", fontsize=7)
    figure.suptitle(title)
    return figure


def fidelity_figure(fidelity: pd.DataFrame) -> Figure:
    """Bar charts of the `all` rows of fidelity tables (one or more generators)."""
    overall = fidelity[fidelity["level"] == "all"].set_index("generator")
    values = overall[list(FIDELITY_METRICS)].rename(columns=FIDELITY_METRICS)
    return grouped_bars_figure(values, "Fidelity to the real data per generator", "value")


def utility_figure(scores: pd.DataFrame, title: str, intervals: pd.DataFrame | None = None) -> Figure:
    """Bar charts of one predictor's scores in one result table: index = the training data of each
    row (labels must differ: rows are never averaged), one column per metric; `intervals` as in
    grouped_bars_figure."""
    if scores.index.duplicated().any():
        raise ValueError(f"one bar per row: duplicated rows {sorted(set(scores.index[scores.index.duplicated()]))}")
    return grouped_bars_figure(scores, title, "score", "training data", intervals)


def overlap_histogram_figure(top1: pd.Series, generator: str, level: float) -> Figure:
    """Distribution of each synthetic week's overlap with its most similar real week."""
    figure = Figure(figsize=(6, 3.6))
    axes = figure.subplots()
    axes.hist(top1.to_numpy(float), bins=np.linspace(0, 1, 21), label=f"{generator} ({len(top1)} weeks)")
    axes.axvline(level, color="black", linestyle="--", label=f"privacy gate level {level}")
    axes.set_xlabel("overlap ratio with the most similar real week")
    axes.set_ylabel("synthetic weeks")
    axes.set_title(f"Uniqueness of the synthetic weeks of {generator}")
    axes.legend()
    return figure
