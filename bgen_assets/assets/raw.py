"""Raw sources of each dataset: `DS/raw_events` and one `DS/raw_NAME` per lookup file."""

import hashlib

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    asset,
    observable_source_asset,
)

from bgen_assets import names, sources
from bgen_assets.checks import schema_entry
from bgen_assets.code_versions import code_version
from bgen_assets.config import Project
from bgen_assets.domain import week_of
from bgen_assets.partitions import users, weeks
from bgen_assets.sources import load_all_events, load_lookup, locate, locate_all, sha256_of
from bgen_assets.warehouse import Warehouse, frame_fingerprint

RAW_GROUP = "raw"


MAX_PARTITIONS_PER_ASSET = 100_000  # Dagster's advice; above it the UI and bookkeeping slow down


def _register_partitions(context: AssetExecutionContext, dataset: str, events: pd.DataFrame) -> None:
    week_keys = sorted(week_of(events["ts"]).unique())
    known_users = set(context.instance.get_dynamic_partitions(users(dataset).name))
    known_weeks = set(context.instance.get_dynamic_partitions(weeks(dataset).name))
    n_users, n_weeks = len(known_users | set(events["user_id"])), len(known_weeks | set(week_keys))
    if n_users * n_weeks > MAX_PARTITIONS_PER_ASSET:
        raise ValueError(
            f"{dataset}: {n_users:,} users x {n_weeks:,} weeks = {n_users * n_weeks:,} partitions per synthetic table, "
            f"over the {MAX_PARTITIONS_PER_ASSET:,} Dagster advises per asset; nothing was registered. Shard the users "
            "into several datasets (README, 'Partitions and scale').")
    context.instance.add_dynamic_partitions(users(dataset).name, sorted(events["user_id"].unique()))
    context.instance.add_dynamic_partitions(weeks(dataset).name, week_keys)


def source_file_asset(project: Project, dataset: str, name: str) -> AssetsDefinition:
    """The file itself, observed: its data version is its sha256, so editing the file makes the
    raw table stale (observe sources in the UI, or let `bgen` do it)."""
    source = project.datasets[dataset].sources[name]

    @observable_source_asset(
        key=names.source_file(dataset, name).key,
        group_name=RAW_GROUP,
        description=f"Source file `{source.file}` of dataset {dataset} (data directory or checked download).",
    )
    def source_file() -> ObserveResult:
        paths = locate_all(source, project)
        version = sha256_of(paths[0]) if len(paths) == 1 else \
            hashlib.sha256(" ".join(f"{path.name}:{sha256_of(path)}" for path in paths).encode()).hexdigest()
        return ObserveResult(data_version=DataVersion(version), metadata={
            "path": MetadataValue.path(str(paths[0])) if len(paths) == 1 else MetadataValue.text(
                ", ".join(str(path) for path in paths))})

    return source_file


def raw_event_asset(project: Project, dataset: str) -> AssetsDefinition:
    source = project.datasets[dataset].sources["events"]
    table = names.raw_events(dataset)

    @asset(
        key=table.key,
        deps=[names.source_file(dataset, "events").key],
        group_name=RAW_GROUP,
        description=f"{project.datasets[dataset].description} Read from `{source.file}`, columns mapped "
        "to canonical fields; registers the dataset's user and week partitions.",
        code_version=code_version(sources, _register_partitions, raw_event_asset),
        metadata=schema_entry(table.name),
        kinds={"duckdb", "csv" if source.format == "csv" else "parquet"},
    )
    def raw_events(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
        paths = locate_all(source, project)
        events = load_all_events(paths, source, project.datasets[dataset].timezone)
        _register_partitions(context, dataset, events)  # refuses too many partitions before anything is written
        warehouse.replace_table(dataset, table.name, events)
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(events)),
            metadata={
                "files": MetadataValue.text(", ".join(str(path) for path in paths)),
                "dagster/row_count": len(events),
                "users": int(events["user_id"].nunique()),
                "first_event": str(events["ts"].min()),
                "last_event": str(events["ts"].max()),
            },
        )

    return raw_events


def raw_lookup_asset(project: Project, dataset: str, name: str) -> AssetsDefinition:
    source = project.datasets[dataset].sources[name]
    relation = names.raw_lookup(dataset, name)

    @asset(
        key=relation.key,
        deps=[names.source_file(dataset, name).key],
        group_name=RAW_GROUP,
        description=f"Lookup table `{source.file}` of dataset {dataset}, loaded as text columns.",
        code_version=code_version(sources, raw_lookup_asset),
        metadata=schema_entry(relation.name),
        kinds={"duckdb"},
    )
    def raw_lookup(warehouse: Warehouse) -> MaterializeResult:
        path = locate(source, project)
        table = load_lookup(path, source).replace({"": None})
        warehouse.replace_table(dataset, relation.name, table)
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(table)),
            metadata={"file": MetadataValue.path(str(path)), "dagster/row_count": len(table)},
        )

    return raw_lookup


def raw_assets(project: Project, dataset: str) -> list[AssetsDefinition]:
    declared = project.datasets[dataset].sources
    lookups = [name for name, s in declared.items() if s.kind == "lookup"]
    files = [source_file_asset(project, dataset, name) for name, s in declared.items() if s.kind != "profiles"]
    return files + [raw_event_asset(project, dataset), *(raw_lookup_asset(project, dataset, n) for n in lookups)]
