"""The asset graph (keys, dependencies, partitions, groups, checks) against a reviewed snapshot.

After an intended change: BGEN_UPDATE_SNAPSHOTS=1 make test, and review the diff."""

import json
import os
from pathlib import Path

from dagster import DynamicPartitionsDefinition, MultiPartitionsDefinition

from bgen_assets.config import load_project
from bgen_assets.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def describe_partitions(partitions_def) -> str | dict | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, MultiPartitionsDefinition):
        return {dim.name: describe_partitions(dim.partitions_def) for dim in partitions_def.partitions_defs}
    if isinstance(partitions_def, DynamicPartitionsDefinition):
        return f"dynamic:{partitions_def.name}"
    return type(partitions_def).__name__


def graph_snapshot() -> dict:
    defs = build_definitions(load_project(environ={}))
    graph = defs.resolve_asset_graph()
    checks: dict[str, list] = {}
    for check_key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(check_key)
        checks.setdefault(check_key.asset_key.to_user_string(), []).append(
            {"name": check_key.name, "blocking": spec.blocking})
    return {
        key.to_user_string(): {
            "deps": sorted(parent.to_user_string() for parent in graph.get(key).parent_keys),
            "group": graph.get(key).group_name,
            "partitions": describe_partitions(graph.get(key).partitions_def),
            "pools": sorted(graph.get(key).pools or []),
            "checks": checks.get(key.to_user_string(), []),
        }
        for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    }


def test_asset_graph_matches_snapshot():
    current = graph_snapshot()
    if os.environ.get("BGEN_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), (
        "the asset graph changed; if intended, rerun with BGEN_UPDATE_SNAPSHOTS=1 and review the diff"
    )
