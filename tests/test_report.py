"""The report and its tables never present a figure the data cannot support: a predictor that
ranks one intent first for every target is flagged and nothing is computed from it, a scenario
without synthetic users reads "no synthetic data", degenerate epsilons are bounded, every plot
names its predictor and table, the fidelity table fits a 1400 px page, and a demo-scale report
opens by saying its figures are not evidence. Small hand-made inputs."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from bgen_assets.config import load_project
from bgen_assets.quality import plots
from bgen_assets.generators import load_generator_specs
from bgen_assets.report_html import (
    FIDELITY_QUALITY_ROWS,
    FIDELITY_ROWS,
    figure_pngs,
    render,
    result_tables,
    scale_warning,
)
from bgen_assets.results import (
    NOTE_NO_SYNTHETIC,
    NOTE_NOT_COMPARABLE,
    NOTE_ONE_INTENT,
    NOTES,
    TABLE_METRICS,
    best_generators,
    utility_tables,
)
from conftest import headless_chromium

GENERATORS = ["markov", "behaviorgen", "behaviorgen_no_segment", "other_population_week"]


def pooled(experiment: str, generator: str, scenario: str, value: float, predicted_intents: int = 6,
           users_with_data: int = 2) -> list[dict]:
    """An arm's pooled row and its two users' rows, every figure `value`: each of 10 intents
    occurs 100 times, is predicted 100 times and right 100 * value times, for both users."""
    labels = {"experiment": experiment, "generator": generator, "scenario": scenario, "seed": 1,
              **dict.fromkeys(TABLE_METRICS, value), "ranked_intents": 10, "predicted_intents": predicted_intents,
              "users_with_data": users_with_data}
    counts = json.dumps({f"intent {i}": [100, 100, round(100 * value)] for i in range(10)})
    return [{**labels, "user_id": "all", "targets": 2000}] + [
        {**labels, "user_id": user, "targets": 1000, "intent_counts": counts} for user in ("1", "2")]


@pytest.fixture
def scores() -> pd.DataFrame:
    """bert4rec learns; pituning collapsed to one intent when pretrained, and its limited-data
    model ranks several but recalls no better (0.1 of 10 intents); behaviorgen reached no
    individual user (its replacement and augmentation rows fell back to models without it)."""
    rows = []
    for experiment, collapsed in (("bert4rec", False), ("pituning", True)):
        rows += [*pooled(experiment, "real", "pretraining", 0.4, 1 if collapsed else 6),
                 *pooled(experiment, "real", "finetune", 0.5),
                 *pooled(experiment, "real", "limited", 0.1 if collapsed else 0.45)]
        for generator in ("markov", "behaviorgen"):
            users = 0 if generator == "behaviorgen" else 2
            rows += [*pooled(experiment, generator, "pretraining", 0.42),
                     *pooled(experiment, generator, "replacement", 0.47, users_with_data=users),
                     *pooled(experiment, generator, "augmentation", 0.46, users_with_data=users)]
    return pd.DataFrame(rows)


def test_collapsed_predictors_and_scenarios_without_synthetic_data_are_not_presented_as_results(scores, tmp_path):
    tables = utility_tables(scores)

    def rows(table: str, experiment: str, label: str) -> pd.DataFrame:
        frame = tables[table]
        return frame[(frame["experiment"] == experiment) & (frame["row"] == label)]

    real_only = rows("pretraining_augmentation", "pituning", "real only").iloc[0]
    assert real_only["note"] == NOTE_ONE_INTENT and real_only["predicted_intents"] == 1
    assert rows("finetuning_augmentation", "pituning", "limited real")["note"].tolist() == [NOTE_ONE_INTENT]
    for changes in (rows("pretraining_augmentation", "pituning", "change vs real only"),
                    rows("finetuning_replacement", "pituning", "replacement rate"),  # against the pretrained
                    rows("finetuning_augmentation", "pituning", "change vs limited real")):
        assert len(changes) and changes[list(TABLE_METRICS)].isna().all().all()
        assert (changes["note"] == NOTE_NOT_COMPARABLE).all()
    assert rows("pretraining_augmentation", "bert4rec", "change vs real only")["precision"].tolist() == \
        pytest.approx([5.0, 5.0])
    assert rows("finetuning_replacement", "bert4rec", "replacement rate")["recall"].tolist() == pytest.approx([70.0])

    for table, label in (("finetuning_replacement", "behaviorgen-finetuned"),
                         ("finetuning_augmentation", "limited real + behaviorgen")):
        empty = rows(table, "bert4rec", label)
        assert empty["note"].tolist() == [NOTE_NO_SYNTHETIC] and empty["users_with_data"].tolist() == [0]
        assert empty[list(TABLE_METRICS)].isna().all().all()
        following = tables[table]["row"].reindex(empty.index + 1).fillna("")
        assert not following.str.startswith(("change", "replacement rate")).any()  # nothing computed from it

    assert best_generators(tables)["finetuning_replacement"] == {"bert4rec": {  # behaviorgen reached no user
        "generator": "markov", "kind": "replacement_rate_%", "ndcg@5": 70.0, "low": 70.0, "high": 70.0,
        "excludes_zero": True}}

    tables["finetuning_augmentation"].to_csv(tmp_path / "table.csv", index=False)
    assert NOTE_NO_SYNTHETIC in set(pd.read_csv(tmp_path / "table.csv")["note"])


def report_inputs(scores: pd.DataFrame) -> dict:
    labels = {**FIDELITY_ROWS, **plots.FIDELITY_METRICS, **FIDELITY_QUALITY_ROWS}
    fidelity = pd.DataFrame([{"generator": g, "level": "all", **dict.fromkeys(labels, 0.123456)} for g in GENERATORS])
    fidelity.loc[fidelity["generator"] == "behaviorgen", "jsd_intent"] = 0.2   # above other_population_week's
    privacy = pd.DataFrame([{"generator": g, "level": "all", "synthetic_weeks": 12, "top1_overlap_mean": 0.2,
                             "top3_overlap_mean": 0.1, "top5_overlap_mean": 0.1, "share_top1_at_least": 0.0,
                             "mia_accuracy": 0.5, "dp_epsilon": epsilon, "gate_passed": True,
                             "gate_reason": "privacy gate passed"}
                            for g, epsilon in zip(GENERATORS, [200305.8, 2.5, float("nan"), 10.0])])
    log = pd.DataFrame({"status": ["ok"], "attempts": [1], "llm_calls": [1], "cache_hits": [0], "prompt_tokens": [10],
                        "completion_tokens": [20], "latency_s": [1.0]})
    specs = [spec for spec in load_generator_specs() if spec.name in GENERATORS]
    real = pd.DataFrame({"user_id": ["1", "1", "2"], "intent": ["Food", "Shop", "Food"],
                         "role": ["individual", "individual", "population"]})
    synthetic = {"markov": pd.DataFrame({"user_id": ["1", "1"], "intent": ["Food", "Food"]})}
    tables = result_tables(scores)
    pngs = figure_pngs(fidelity, tables, real, synthetic)
    return {"specs": specs, "tables": tables, "fidelity": fidelity, "privacy": privacy,
            "logs": dict.fromkeys(GENERATORS, log), "pngs": pngs}


@pytest.mark.filterwarnings("error::UserWarning")   # e.g. matplotlib's "Tight layout not applied" in the demo log
def test_every_plot_names_its_predictor_and_table(scores):
    pngs = report_inputs(scores)["pngs"]
    utility = sorted(name for name in pngs if name.startswith("utility_"))
    assert utility == [f"utility_{table}_{experiment}.png" for table in
                       ("finetuning_augmentation", "finetuning_replacement", "pretraining_augmentation")
                       for experiment in ("bert4rec", "pituning")]
    figure = plots.utility_figure(pd.DataFrame({"precision": [0.4, 0.42]}, index=["real only", "real + markov"]),
                                  "Table 1. Pretraining augmentation: predictor bert4rec")
    assert figure.get_suptitle() == "Table 1. Pretraining augmentation: predictor bert4rec"
    assert [bar.get_height() for bar in figure.axes[0].containers[0]] == [0.4, 0.42]
    with pytest.raises(ValueError, match="one bar per row"):
        plots.utility_figure(pd.DataFrame({"precision": [0.4, 0.6]}, index=["markov", "markov"]), "title")
    long_labels = ["limited real", "limited real + markov_order3 (one intent)", "limited real + behavior_gpt_cool"]
    plots.png(plots.utility_figure(pd.DataFrame({m: [0.1, 0.2, 0.3] for m in TABLE_METRICS}, index=long_labels),
                                   "Table 3. Fine-tuning augmentation: predictor pituning\n(bars: 95% intervals)"))
    titles = [plots.intent_distribution_figure(pd.Series(["Food"]), pd.Series(["Food"]), pd.Series(["Food"]), "1", g)
              .axes[0].get_title() for g in ("markov", "behaviorgen")]
    assert len(set(titles)) == 2 and "markov" in titles[0]


def test_demo_scale_report_opens_with_its_caveat_and_bounds_degenerate_epsilons(scores, tmp_path):
    project = load_project()
    demo = project.model_copy(update={"scope": "demo"})
    caveat = scale_warning(demo, "tokyo")
    assert "not evidence" in caveat and "bgen run --scope paper" in caveat and "4 users" in caveat
    assert scale_warning(project.model_copy(update={"scope": "full"}), "tokyo") == ""

    inputs = report_inputs(scores)
    html = render("tokyo", "Check-ins.", caveat, **inputs)
    opening = html[html.index("<body>"):][:600]
    assert "Not evidence." in opening and "bgen run --scope paper" in opening
    privacy = html[html.index("<h2>Privacy</h2>"):]
    assert "200305" not in html and "&gt; 10" in privacy and "2.500" in privacy and "10.000" in privacy
    assert f"<b>{NOTE_ONE_INTENT}</b>: {NOTES[NOTE_ONE_INTENT]}" in html and f"<td>{NOTE_NO_SYNTHETIC}</td>" in html
    assert "Table 2. Fine-tuning replacement, bert4rec: markov (replacement rate in ndcg@5 +70.0% [+70.0, +70.0]*)" in html
    assert ("real user's week): behaviorgen_no_segment, markov; above it: behaviorgen." in html)
    assert "Not built in this scope: behaviorgen_no_profile, behaviorgen_no_role, behaviorgen_no_format" in html

    # the fidelity table, one column per generator, fits a 1400 px window without widening the page
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", "<script>document.title = 'width=' + "
                                 "document.documentElement.scrollWidth;</script></body>"))
    dom = headless_chromium("--window-size=1400,2000", "--dump-dom", page.as_uri()).stdout
    width = int(re.search(r"<title>width=(\d+)</title>", dom).group(1))
    assert width <= 1400, f"the report is {width} px wide"
