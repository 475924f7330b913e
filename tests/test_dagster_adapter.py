"""Pins the Dagster behaviour bgen relies on without a public API (bgen_assets/dagster_adapter.py)
and the partition-key rules bgen_assets/sources.py restates; a Dagster release that changes
any of it fails here first. Also: no other module imports Dagster's internals."""

import ast
from pathlib import Path

import pytest
from dagster import (AssetKey, DagsterInvalidDefinitionError, Definitions, MaterializeResult, DataVersion,
                     MultiPartitionKey, StaticPartitionsDefinition, asset, materialize)
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from bgen_assets.dagster_adapter import PooledSqliteEventLogStorage, stale_or_missing
from bgen_assets.sources import FORBIDDEN_IN_USER_IDS
from conftest import project_instance

PACKAGE = Path(__file__).resolve().parent.parent / "bgen_assets"


def two_assets(code_version: str, value: str):
    @asset(key="upstream")
    def upstream() -> MaterializeResult:
        return MaterializeResult(data_version=DataVersion(value))

    @asset(key="downstream", deps=[AssetKey("upstream")], code_version=code_version)
    def downstream() -> None:
        return None

    return [upstream, downstream]


def test_stale_status_follows_code_versions_and_input_data_versions(tmp_path):
    with project_instance(tmp_path) as instance:
        def stale(assets) -> bool:
            return stale_or_missing(instance, Definitions(assets=assets).resolve_asset_graph(), AssetKey("downstream"))

        assets = two_assets("1", "a")
        assert stale(assets)  # never materialised
        materialize(assets, instance=instance)
        assert not stale(assets)
        assert stale(two_assets("2", "a"))  # its code changed
        materialize([two_assets("1", "b")[0]], instance=instance)
        assert stale(two_assets("1", "b"))  # its input's data version changed


def test_the_event_log_storage_still_overrides_hooks_dagster_calls(tmp_path):
    for hook in ("_connect", "has_table", "_initdb", "conn_string_for_shard", "dispose"):
        assert callable(getattr(SqliteEventLogStorage, hook)), hook
    with project_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        assert hasattr(storage, "_db_lock") and isinstance(storage._initialized_dbs, set)
        materialize(two_assets("1", "a"), instance=instance)
        assert instance.get_latest_materialization_event(AssetKey("downstream")) is not None
        assert storage._engines, "events were stored without the kept engines"


@pytest.mark.parametrize("forbidden", [text for text in FORBIDDEN_IN_USER_IDS if text != "|"])
def test_dagster_refuses_what_user_ids_may_not_hold(forbidden):
    with pytest.raises(DagsterInvalidDefinitionError):
        StaticPartitionsDefinition([f"user{forbidden}1"])


def test_a_multi_partition_key_joins_user_and_week_with_a_bar():
    assert str(MultiPartitionKey({"user": "u1", "week": "2019-01-07"})) == "u1|2019-01-07"


def test_only_the_adapter_imports_dagster_internals():
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(module.startswith("dagster._") for module in modules):
                importers.append(str(path.relative_to(PACKAGE)))
    assert sorted(set(importers)) == ["dagster_adapter.py"]
