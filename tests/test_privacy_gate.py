"""The privacy gate on the fixture project: a generator that copies real weeks
(`repeat_last_week`) fails the check, with the threshold and the measured value named, while its
evaluation run succeeds (a stopped generator is an outcome); neither its training set nor a
predictor is built from it; the Markov baseline passes and is trained on, tracked in MLflow with
the lineage of its training set."""


import pytest
from conftest import tokyo_experiment_runner
from dagster import AssetKey, DagsterRunStatus
from mlflow import MlflowClient

from bgen_assets.assets.evaluation import GATE_CHECK
from bgen_assets.partitions import users
from bgen_assets.quality.gate import gate_verdict
from bgen_assets.runs import RunFailed

GENERATORS = ("markov", "repeat_last_week")
TINY_EXPERIMENT = """description: A small Bert4Rec trained on both generators, to see the gate stop one.
backbone: bert4rec
pretrain: {history: 8, width: 16, layers: 1, heads: 1, max_epochs: 2, patience: 1, seed: 3}
finetune: {max_epochs: 1}
generators: [markov, repeat_last_week]
"""


@pytest.fixture(scope="module")
def runner(tmp_path_factory, fixture_data):
    folder = tmp_path_factory.mktemp("gate")
    with tokyo_experiment_runner(folder, fixture_data, GENERATORS, TINY_EXPERIMENT) as built:
        fixture_users = sorted(built.instance.get_dynamic_partitions(users("tokyo").name))
        for user in fixture_users[:3]:  # the others are the membership attack's non-members
            built.materialize_user("tokyo", user)
        yield built


def downstream(generator: str) -> list[AssetKey]:
    return [AssetKey(["tokyo", f"training_set_{generator}"]), AssetKey(["tokyo", f"tiny_with_{generator}"])]


def test_copied_weeks_fail_the_gate_and_block_downstream(runner):
    keys = [AssetKey(["tokyo", f"{table}_{generator}"]) for generator in GENERATORS for table in ("fidelity", "privacy")]
    [failed] = runner._materialize(keys, tolerated_checks=(GATE_CHECK,))
    assert failed.startswith("tokyo/privacy_repeat_last_week: privacy gate failed: 100.0% of")
    assert "synthetic weeks have a real week with overlap >= 0.5" in failed
    assert "privacy_gate.max_share_weeks_at_overlap = 20.0%" in failed
    assert runner.instance.get_runs(limit=1)[0].status == DagsterRunStatus.SUCCESS  # an outcome, not a failed run

    # training in one run with both: the leaking generator's training set refuses to build, with the reason
    with pytest.raises(RunFailed, match=r"privacy_gate\.max_share_weeks_at_overlap") as failure:
        runner._materialize([AssetKey(["tokyo", "tiny_real"]), *downstream("markov"), *downstream("repeat_last_week")])
    assert "privacy_markov" not in str(failure.value)

    materialised = {key for key in runner.graph.get_all_asset_keys() if runner.instance.get_latest_materialization_event(key)}
    assert set(downstream("markov")) <= materialised
    assert not set(downstream("repeat_last_week")) & materialised
    assert set(keys) <= materialised  # the leaking table's evaluation is kept, with its verdict
    # a later run cannot build the training set either: the SQL model itself refuses with the reason
    with pytest.raises(RunFailed, match="privacy_gate.max_share_weeks_at_overlap"):
        runner._materialize([AssetKey(["tokyo", "training_set_repeat_last_week"])])

    client = MlflowClient(tracking_uri=runner.defs.resources["tracking"].uri())
    experiment = client.get_experiment_by_name("tokyo")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert not [name for name in runs if "repeat_last_week" in name]
    trained = runs["tiny: pretrain on real + markov, seed 3"]
    assert trained.data.params["generator"] == "markov" and trained.data.params["width"] == "16"
    assert {"bgen.lineage.tokyo/event_splits", "bgen.lineage.tokyo/training_set_markov"} <= set(trained.data.tags)
    assert 0 <= trained.data.metrics["pretraining.ndcg_at_5"] <= 1

    passed, reason = gate_verdict(runner.warehouse, "tokyo", "repeat_last_week")
    assert not passed and "privacy_gate.max_share_weeks_at_overlap" in reason
    passed, reason = gate_verdict(runner.warehouse, "tokyo", "markov")
    assert passed and reason.startswith("privacy gate passed: 0.0% of")

    privacy = runner.warehouse.query("SELECT * FROM tokyo.privacy_markov WHERE level = 'all'").iloc[0]
    assert privacy["mia_samples"] > 0 and privacy["mia_accuracy"] <= 0.75 and privacy["dp_epsilon"] >= 0
    leak = runner.warehouse.query("SELECT * FROM tokyo.privacy_repeat_last_week WHERE level = 'all'").iloc[0]
    assert leak["top1_overlap_mean"] == 1.0 and leak["mia_accuracy"] == 1.0 and leak["dp_epsilon"] > privacy["dp_epsilon"]

    fidelity = runner.instance.get_latest_materialization_event(AssetKey(["tokyo", "fidelity_markov"])).asset_materialization
    assert {"ks_p_time_of_week", "ks_p_events_per_week", "ks_p_inter_event_gap", "bleu", "bd_intent", "jsd_intent",
            "pass_at_1", "synthetic_events_per_week", "intent_distribution"} <= set(fidelity.metadata)
    assert fidelity.metadata["intent_distribution"].value.startswith("![intent_distribution](data:image/png;base64,")
    table = runner.warehouse.query("SELECT * FROM tokyo.fidelity_markov ORDER BY level, user_id")
    assert table["level"].tolist() == ["all", "user", "user", "user"]


def test_a_verdict_on_older_synthetic_data_does_not_count(runner):
    runner.materialize_user("tokyo", sorted(runner.instance.get_dynamic_partitions(users("tokyo").name))[3], "markov")
    passed, reason = gate_verdict(runner.warehouse, "tokyo", "markov")
    assert not passed and "out of date" in reason
    assert not gate_verdict(runner.warehouse, "tokyo", "never_declared")[0]
    # the evaluation stage re-evaluates it (whatever Dagster's own staleness says of a table fed by new partitions)
    passed, reason = runner.evaluate_generators("tokyo", ["markov"])["markov"]
    assert "out of date" not in reason and reason.startswith("privacy gate")
