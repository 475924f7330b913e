"""Synthetic events: for every generator declaration and dataset, `DS/synthetic_NAME`
partitioned by (user, week), plus `DS/NAME_model` when the generator is fitted on the
population users. Partition (u, w) holds the week generated from user u's real week w."""


import hashlib
import time

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetDep,
    BackfillPolicy,
    DataVersion,
    MaterializeResult,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from bgen_assets.catalog import Catalog
from bgen_assets.config import Project
from bgen_assets.generators import GeneratorSpec, generator_kind
from bgen_assets.partitions import USER, WEEK, user_weeks
from bgen_assets.schemas import table_schema, validate
from bgen_assets.warehouse import DUCKDB_POOL, Warehouse, frame_fingerprint

SYNTHETIC_GROUP = "synthetic"


def stable_seed(*parts: str | int) -> list[int]:
    """Seed material that is the same in every process (unlike Python's salted hash())."""
    return [int.from_bytes(hashlib.sha256(str(part).encode()).digest()[:4], "little") for part in parts]


def model_asset(project: Project, dataset: str, spec: GeneratorSpec) -> AssetsDefinition:
    kind = generator_kind(spec.kind)

    @asset(
        key=[dataset, f"{spec.name}_model"],
        deps=[AssetKey([dataset, "events"]), AssetKey([dataset, "user_split"])],
        group_name=SYNTHETIC_GROUP,
        pool=DUCKDB_POOL,
        description=f"Generator `{spec.name}` fitted on the population users. {spec.description}",
        code_version=f"{spec.kind}-1-{hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:8]}",
        kinds={"duckdb", "python"},
    )
    def fitted(warehouse: Warehouse) -> MaterializeResult:
        population = warehouse.query(
            f'SELECT e.* FROM "{dataset}".events e JOIN "{dataset}".user_split s USING (user_id) '
            "WHERE s.role = 'population' ORDER BY user_id, ts"
        )
        started = time.perf_counter()
        table = kind.fit(population, spec.params, project.slot_minutes)
        fit_seconds = time.perf_counter() - started
        warehouse.replace_table(dataset, f"{spec.name}_model", table)
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(table)),
            metadata={"dagster/row_count": len(table), "fit_seconds": round(fit_seconds, 3),
                      "population_events": len(population)},
        )

    return fitted


def synthetic_asset(project: Project, catalog: Catalog, dataset: str, spec: GeneratorSpec) -> AssetsDefinition:
    kind = generator_kind(spec.kind)
    table_name = f"synthetic_{spec.name}"
    schema = table_schema(catalog, "synthetic_events")
    deps = [AssetDep(AssetKey([dataset, "weekly_segments"]),
                     partition_mapping=MultiToSingleDimensionPartitionMapping(partition_dimension_name=USER))]
    if kind.NEEDS_FIT:
        deps.append(AssetDep(AssetKey([dataset, f"{spec.name}_model"])))

    @asset(
        key=[dataset, table_name],
        deps=deps,
        partitions_def=user_weeks(dataset),
        backfill_policy=BackfillPolicy.single_run(),
        group_name=SYNTHETIC_GROUP,
        pool=DUCKDB_POOL,
        description=f"Synthetic events from generator `{spec.name}` ({spec.kind}); partition (user, week) "
        f"is the week generated from that user's real week. {spec.description}",
        code_version=f"{spec.kind}-1-{hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:8]}",
        kinds={"duckdb", "python"},
    )
    def synthetic(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
        keys = [user_weeks(dataset).get_partition_key_from_str(key).keys_by_dimension for key in context.partition_keys]
        requested = [(key[USER], key[WEEK]) for key in keys]
        model = kind.from_table(warehouse.query(f'SELECT * FROM "{dataset}"."{spec.name}_model"')) if kind.NEEDS_FIT else None
        histories = warehouse.query(
            f'SELECT * FROM "{dataset}".weekly_segments WHERE list_contains(?, user_id) ORDER BY user_id, ts',
            [sorted({user for user, _ in requested})],
        )
        by_user = dict(tuple(histories.groupby("user_id")))
        frames, skipped = [], 0
        started = time.perf_counter()
        for user, week in requested:
            history = by_user.get(user)
            if history is None or not (history["week"] == week).any():
                skipped += 1  # the user has no real events that week: nothing to condition on
                continue
            rng = np.random.default_rng(stable_seed(spec.seed, dataset, user, week))
            week_events = kind.generate(model, history[history["week"] <= week], week, spec.params, rng, project.slot_minutes)
            frames.append(week_events.assign(
                user_id=user, week=week,
                target_week=(pd.Timestamp(week) + pd.Timedelta(days=7)).strftime("%Y-%m-%d"),
                generator=spec.name,
            ))
        generated = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(schema.columns))
        generated = validate(schema, generated[list(schema.columns)])
        warehouse.replace_partitions(dataset, table_name, generated,
                                     [{"user_id": user, "week": week} for user, week in requested])
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(generated)),
            metadata={
                "dagster/row_count": len(generated),
                "partitions": len(requested),
                "partitions_without_real_week": skipped,
                "generate_seconds": round(time.perf_counter() - started, 3),
                "events_per_week": round(len(generated) / max(len(requested) - skipped, 1), 2),
            },
        )

    return synthetic


def generator_assets(project: Project, catalog: Catalog, dataset: str, spec: GeneratorSpec) -> list[AssetsDefinition]:
    fitted = [model_asset(project, dataset, spec)] if generator_kind(spec.kind).NEEDS_FIT else []
    return fitted + [synthetic_asset(project, catalog, dataset, spec)]
