"""The privacy gate on the fixture project: a generator that copies real weeks
(`repeat_last_week`) fails the blocking check, with the threshold and the measured value named,
and nothing downstream of its privacy table is built; the Markov baseline passes."""

import shutil

import pytest
from dagster import AssetKey, Definitions, asset

from bgen_assets.catalog import Catalog
from bgen_assets.config import MODELS_DIR, load_project
from bgen_assets.evaluation.gate import gate_verdict
from bgen_assets.partitions import users
from bgen_assets.runs import RunFailed, Runner
from conftest import project_instance, write_project

GENERATORS = ("markov", "repeat_last_week")


def probe(generator: str):
    """Stands in for a training set built from a synthetic table: downstream of its privacy table."""
    @asset(key=["tokyo", f"uses_{generator}"], deps=[AssetKey(["tokyo", f"privacy_{generator}"])])
    def uses() -> None:
        return None
    return uses


@pytest.fixture(scope="module")
def runner(tmp_path_factory, fixture_data):
    folder = tmp_path_factory.mktemp("gate")
    models = folder / "models"
    shutil.copytree(MODELS_DIR, models)
    for declaration in (models / "generators").glob("*.yml"):
        if declaration.stem not in GENERATORS:
            declaration.unlink()

    def tokyo_only(raw):
        raw["datasets"].pop("ubiqlog")
        for scope in raw["scopes"].values():
            scope.pop("ubiqlog", None)

    project = load_project(write_project(folder, fixture_data, tokyo_only))
    with project_instance(folder / "dagster") as instance:
        built = Runner.for_project(project, instance, Catalog(project, models))
        built.build_shared()
        fixture_users = sorted(instance.get_dynamic_partitions(users("tokyo").name))
        for user in fixture_users[:3]:  # the others are the membership attack's non-members
            built.materialize_user("tokyo", user)
        defs = built.defs
        yield Runner(project, Definitions(assets=[*defs.assets, *map(probe, GENERATORS)], asset_checks=defs.asset_checks,
                                          resources=defs.resources), instance)


def test_copied_weeks_fail_the_gate_and_block_downstream(runner):
    keys = [AssetKey(["tokyo", f"{table}_{generator}"]) for generator in GENERATORS for table in ("fidelity", "privacy")]
    with pytest.raises(RunFailed) as failure:
        runner._materialize([*keys, *(AssetKey(["tokyo", f"uses_{generator}"]) for generator in GENERATORS)])
    message = str(failure.value)
    assert "check tokyo/privacy_repeat_last_week:privacy_gate failed" in message
    assert "100.0% of" in message and "synthetic weeks have a real week with overlap >= 0.5" in message
    assert "privacy_gate.max_share_weeks_at_overlap = 20.0%" in message
    assert "privacy_markov" not in message

    materialised = {key for key in runner.graph.get_all_asset_keys() if runner.instance.get_latest_materialization_event(key)}
    assert AssetKey(["tokyo", "uses_markov"]) in materialised
    assert AssetKey(["tokyo", "uses_repeat_last_week"]) not in materialised
    assert set(keys) <= materialised  # the leaking table's evaluation is kept, with its verdict

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
