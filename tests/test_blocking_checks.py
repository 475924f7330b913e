"""A table that fails its Pandera schema stops the run before anything is built from it."""

import shutil

import duckdb
import pytest

from bgen_assets.catalog import Catalog
from bgen_assets.config import MODELS_DIR, load_project
from bgen_assets.runs import Runner, RunFailed
from conftest import project_instance, write_project


def test_failing_events_check_blocks_downstream(tmp_path, fixture_data):
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    (models / "tokyo").mkdir()
    (models / "tokyo" / "events.sql").write_text(
        "SELECT user_id, ts, weekday + 7 AS weekday, time_slot, location, intent FROM ("
        + (MODELS_DIR / "dataset" / "events.sql").read_text().split("\n", 1)[1] + ")")
    project = load_project(write_project(tmp_path, fixture_data))
    with project_instance(tmp_path / "dagster") as instance:
        runner = Runner.for_project(project, instance, Catalog(project, models))
        with pytest.raises(RunFailed, match="tokyo/events:pandera_schema.*'weekday'"):
            runner.build_shared()
        evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [next(k for k in runner.graph.asset_check_keys if k.asset_key.path == ["tokyo", "events"])])
    assert evaluation
    with duckdb.connect(str(project.warehouse_path), read_only=True) as con:
        tables = {f"{s}.{t}" for s, t in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
    assert "tokyo.events" in tables
    assert not {"tokyo.user_split", "tokyo.inferred_profiles", "tokyo.profiles", "tokyo.markov_model"} & tables
    assert "ubiqlog.events" in tables  # the other dataset is unaffected
