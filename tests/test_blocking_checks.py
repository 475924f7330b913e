"""A SQL model whose table fails its Pandera schema stops the run before the table is written
or anything is built from it."""

import shutil

import duckdb
import pytest

from bgen_assets.catalog import Catalog
from bgen_assets.config import MODELS_DIR, load_project
from bgen_assets.runs import Runner, RunFailed
from conftest import project_instance, write_project


def test_events_failing_their_schema_are_never_written(tmp_path, fixture_data):
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    (models / "tokyo").mkdir()
    (models / "tokyo" / "events.sql").write_text(
        "SELECT user_id, ts, weekday + 7 AS weekday, time_slot, location, intent FROM ("
        + (MODELS_DIR / "dataset" / "events.sql").read_text().split("\n", 1)[1] + ")")
    project = load_project(write_project(tmp_path, fixture_data))
    with project_instance(tmp_path / "dagster") as instance:
        runner = Runner.for_project(project, instance, Catalog(project, models))
        with pytest.raises(RunFailed, match=r"tokyo.*events.*fails its schema(.|\n)*column 'weekday'"):
            runner.build_shared()
    with duckdb.connect(str(project.warehouse_path), read_only=True) as con:
        tables = {f"{s}.{t}" for s, t in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
    assert "tokyo.events" not in tables  # validated before COMMIT: a failing table is never written
    assert not {"tokyo.user_split", "tokyo.inferred_profiles", "tokyo.profiles", "tokyo.markov_model"} & tables
    assert "ubiqlog.events" in tables  # the other dataset is unaffected
