"""The declarative catalogue: SQL files become assets with dependencies from ref()."""

import shutil

import pytest
from dagster import AssetKey

from bgen_assets.catalog import Catalog
from bgen_assets.config import MODELS_DIR, load_project
from bgen_assets.definitions import build_definitions


@pytest.fixture
def models_copy(tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(MODELS_DIR, folder)
    return folder


def parents(defs, *path) -> set[str]:
    return {key.to_user_string() for key in defs.resolve_asset_graph().get(AssetKey(list(path))).parent_keys}


def test_adding_a_sql_file_adds_an_asset_with_its_dependencies(models_copy):
    (models_copy / "dataset" / "daily_counts.sql").write_text(
        "-- Events per user and day.\n"
        "SELECT e.user_id, CAST(e.ts AS DATE) AS day, count(*) AS n, any_value(s.role) AS role\n"
        "FROM {{ ref('events') }} e JOIN {{ ref('user_split') }} s USING (user_id) GROUP BY ALL\n"
    )
    (models_copy / "tokyo" ).mkdir(exist_ok=True)
    (models_copy / "tokyo" / "food_share.sql").write_text(
        "SELECT user_id, avg((intent = 'Food')::INT) AS food_share FROM {{ ref('daily_counts') }} d "
        "JOIN {{ ref('events') }} USING (user_id) GROUP BY user_id\n"
    )
    defs = build_definitions(load_project(environ={}), Catalog(load_project(environ={}), models_copy))
    assert parents(defs, "tokyo", "daily_counts") == {"tokyo/events", "tokyo/user_split"}
    assert parents(defs, "ubiqlog", "daily_counts") == {"ubiqlog/events", "ubiqlog/user_split"}
    assert parents(defs, "tokyo", "food_share") == {"tokyo/daily_counts", "tokyo/events"}
    assert AssetKey(["ubiqlog", "food_share"]) not in defs.resolve_asset_graph().get_all_asset_keys()


def test_dataset_model_overrides_the_shared_one(models_copy):
    catalog = Catalog(load_project(environ={}), models_copy)
    assert catalog.model_files("tokyo")["events"].parent.name == "dataset"
    assert catalog.model_files("ubiqlog")["events"].parent.name == "ubiqlog"


def test_rendering_uses_macros_and_declared_vars():
    catalog = Catalog(load_project(environ={}))
    events = {m.relation.name: m for m in catalog.models("tokyo")}["events"]
    assert "// 30) AS time_slot" in events.sql and "isodow(ts) - 1" in events.sql
    sessions = {m.relation.name: m for m in catalog.models("ubiqlog")}["app_sessions"]
    assert "60" in sessions.sql
    assert {r.sql for r in sessions.refs} >= {'"ubiqlog"."raw_events"', '"seeds"."ubiqlog_system_packages"'}


def test_undeclared_var_names_file_and_dataset(models_copy):
    (models_copy / "dataset" / "bad.sql").write_text("SELECT {{ var('no_such_var') }} AS x")
    with pytest.raises(KeyError, match="bad.sql.*no_such_var.*tokyo"):
        Catalog(load_project(environ={}), models_copy).models("tokyo")
