"""Evaluation figures: labelled axes and legends, and the PNG bytes open as images."""

import io

import matplotlib.image
import pandas as pd

from bgen_assets.quality import plots


def opens_as_png(data: bytes) -> tuple[int, ...]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(io.BytesIO(data), format="png").shape


def test_intent_distribution_shows_user_population_and_synthetic():
    figure = plots.intent_distribution_figure(
        pd.Series(["Food", "Food", "Shop"]), pd.Series(["Food", "Travel", "Shop", "Shop"]), pd.Series(["Food", "Travel"]),
        "1004", "markov")
    axes = figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("intent", "share of events")
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "user 1004, real", "population, real", "user 1004, synthetic (markov)"]
    assert axes.get_title() == "Intent distribution of user 1004: real vs markov"
    assert [label.get_text() for label in axes.get_xticklabels()] == ["Food", "Shop", "Travel"]  # by the user's share
    heights = [[bar.get_height() for bar in container] for container in axes.containers]
    assert heights == [[2 / 3, 1 / 3, 0.0], [0.25, 0.5, 0.25], [0.5, 0.0, 0.5]]
    height, width, _ = opens_as_png(plots.png(figure))
    assert height > 100 and width > 100


def test_fidelity_and_utility_bars_per_generator():
    fidelity = pd.DataFrame({"generator": ["markov", "markov", "repeat_last_week"], "level": ["all", "user", "all"],
                             **{metric: [0.2, 0.9, 0.1] for metric in plots.FIDELITY_METRICS}})
    figure = plots.fidelity_figure(fidelity)
    assert len(figure.axes) == len(plots.FIDELITY_METRICS)
    for axes, label in zip(figure.axes, plots.FIDELITY_METRICS.values()):
        assert axes.get_title() == label and axes.get_xlabel() == "generator"
        assert [tick.get_text() for tick in axes.get_xticklabels()] == ["markov", "repeat_last_week"]
        assert [bar.get_height() for bar in axes.containers[0]] == [0.2, 0.1]  # level `all` only
    opens_as_png(plots.png(figure))

    scores = pd.DataFrame({"precision": [0.4, 0.55], "ndcg@5": [0.7, 0.72]}, index=["real only", "real + markov"])
    figure = plots.utility_figure(scores, "Table 1. Pretraining augmentation: predictor bert4rec")
    assert [axes.get_title() for axes in figure.axes] == ["precision", "ndcg@5"]
    assert [bar.get_height() for bar in figure.axes[0].containers[0]] == [0.4, 0.55]
    assert (figure.axes[0].get_ylabel(), figure.axes[0].get_xlabel()) == ("score", "training data")
    opens_as_png(plots.png(figure))


def test_overlap_histogram_marks_the_gate_level():
    figure = plots.overlap_histogram_figure(pd.Series([0.05, 0.1, 0.95]), "markov", 0.5)
    axes = figure.axes[0]
    assert axes.get_xlabel() == "overlap ratio with the most similar real week" and axes.get_ylabel() == "synthetic weeks"
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["markov (3 weeks)", "privacy gate level 0.5"]
    assert sum(patch.get_height() for patch in axes.patches) == 3
    assert axes.get_title() == "Uniqueness of the synthetic weeks of markov"
    opens_as_png(plots.png(figure))
