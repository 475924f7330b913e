"""Synthetic events: for every generator declaration and dataset, `DS/synthetic_NAME`
partitioned by (user, week), plus `DS/NAME_model` when the generator is fitted on the
population users. Partition (u, w) holds the weeks generated from user u's real week w: one, or
`samples_per_week` independently sampled ones (column `sample`)."""


import hashlib
import resource
import time
from dataclasses import replace

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

from bgen_assets import names
from bgen_assets.catalog import Catalog
from bgen_assets.checks import schema_entry
from bgen_assets.code_versions import code_version
from bgen_assets.config import Project
from bgen_assets.domain import PROFILE_ATTRIBUTES
from bgen_assets.generators import LOG_DEFAULTS, GenerationContext, GeneratorSpec, WeekTask, generator_kind
from bgen_assets.llm import EventVocabulary
from bgen_assets.partitions import USER, WEEK, user_weeks
from bgen_assets.schemas import table_schema, validate
from bgen_assets.staleness import input_version, input_version_prefix
from bgen_assets.warehouse import Warehouse, frame_fingerprint

SYNTHETIC_GROUP = "synthetic"


def stable_seed(*parts: str | int) -> list[int]:
    """Seed material that is the same in every process (unlike Python's salted hash())."""
    return [int.from_bytes(hashlib.sha256(str(part).encode()).digest()[:4], "little") for part in parts]


def generator_code_version(spec: GeneratorSpec) -> str:
    """A hash of what decides a generator's output: its declaration and the kind's code files
    (for BehaviorGen also the prompt templates, output format and grammar)."""
    # what decides the output; one sample a week, the default, is left out so that declarations
    # from before the lever keep their code version
    one_sample = {"samples_per_week"} if spec.samples_per_week == 1 else set()
    declaration = spec.model_dump_json(exclude={"scope", "description", *one_sample})
    return f"{spec.kind}-{code_version(declaration, *generator_kind(spec.kind).code_files())}"


def synthetic_code_version(spec: GeneratorSpec, catalog: Catalog) -> str:
    """The generator's code version and the synthetic tables' columns: partitions written in an
    older layout (e.g. without `sample`) are regenerated, never read with a column missing."""
    columns = [",".join(table_schema(catalog, name).columns) for name in ("synthetic_events", "generation_log")]
    return code_version(generator_code_version(spec), *columns)


def model_asset(project: Project, dataset: str, spec: GeneratorSpec) -> AssetsDefinition:
    kind = generator_kind(spec.kind)
    profiled = kind.needs_profiles  # fitted with each population user's profile columns

    relation = names.generator_model(dataset, spec.name)

    @asset(
        key=relation.key,
        deps=[names.sql_model(dataset, "events").key, names.user_split(dataset).key,
              *([names.profiles(dataset).key] if profiled else [])],
        group_name=SYNTHETIC_GROUP,
        description=f"Generator `{spec.name}` fitted on the population users. {spec.description}",
        code_version=generator_code_version(spec),
        metadata=schema_entry(f"{spec.kind}_model"),
        kinds={"duckdb", "python"},
    )
    def fitted(warehouse: Warehouse) -> MaterializeResult:
        profile_columns = "".join(f", p.{a}" for a in PROFILE_ATTRIBUTES) if profiled else ""
        profile_join = f"JOIN {names.profiles(dataset).sql} p USING (user_id) " if profiled else ""
        population = warehouse.query(
            f"SELECT e.*{profile_columns} FROM {names.sql_model(dataset, 'events').sql} e "
            f"JOIN {names.user_split(dataset).sql} s USING (user_id) "
            f"{profile_join}WHERE s.role = 'population' ORDER BY user_id, ts"
        )
        started = time.perf_counter()
        table = kind.fit(population, spec.settings, spec.seed, generation_context(project, dataset, warehouse))
        fit_seconds = time.perf_counter() - started
        warehouse.replace_table(dataset, relation.name, table)
        described = kind.model_metadata(kind.from_table(table))
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(table)),
            metadata={"dagster/row_count": len(table), "fit_seconds": round(fit_seconds, 3),
                      "population_events": len(population), "process_peak_rss_mb": peak_rss_mb(), **described},
        )

    return fitted


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (a run's steps share one process, so an upper
    bound for the step); per-generator peaks in isolation are measured by `make bench`."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def generation_context(project: Project, dataset: str, warehouse: Warehouse) -> GenerationContext:
    pairs = warehouse.query(f"SELECT location, intent FROM {names.sql_model(dataset, 'vocabulary').sql} ORDER BY location, intent")
    intents_by_location = {location: tuple(group["intent"]) for location, group in pairs.groupby("location")}
    return GenerationContext(
        dataset=dataset,
        description=project.datasets[dataset].description,
        slot_minutes=project.slot_minutes,
        vocabulary=EventVocabulary(intents_by_location),
        state_dir=project.home,
        model_dir=project.model_cache,
    )


def visible_weeks(segments: pd.DataFrame) -> set[str]:
    """The weeks a generator may condition on: every event in them is population pretraining or an
    individual user's fine-tune train data, so validation and test periods are never seen."""
    hidden = segments.loc[~segments["part"].isin(["pretrain", "train"]), "week"]
    return set(segments["week"]) - set(hidden)


def accounting(log: pd.DataFrame, prices: tuple[float, float]) -> dict:
    """Run totals of the generation log, as asset metadata (prices: USD per million prompt and
    completion tokens)."""
    generated = log[log["attempts"] > 0]
    totals = {
        "user_weeks": len(log),
        "failed_weeks": int((log["status"] == "failed").sum()),
        "requests": int(generated["attempts"].sum()),
        "llm_calls": int(log["llm_calls"].sum()),
        "cache_hits": int(log["cache_hits"].sum()),
        "prompt_tokens": int(log["prompt_tokens"].sum()),
        "completion_tokens": int(log["completion_tokens"].sum()),
        "transport_retries": int(log["transport_retries"].sum()),
        "llm_seconds": round(float(log["latency_s"].sum()), 2),
    }
    if len(generated):
        totals["pass_at_1"] = round(float(generated["pass_at_1"].mean()), 4)
        totals["valid_after_repair"] = round(float((generated["status"] == "ok").mean()), 4)
        cost = (log["billed_prompt_tokens"].sum() * prices[0] + log["billed_completion_tokens"].sum() * prices[1]) / 1e6
        totals["estimated_cost_usd"] = round(float(cost), 6)
    return totals


def synthetic_asset(project: Project, catalog: Catalog, dataset: str, spec: GeneratorSpec) -> AssetsDefinition:
    kind = generator_kind(spec.kind)
    table, table_log, table_failures = (names.synthetic(dataset, spec.name), names.synthetic_log(dataset, spec.name),
                                        names.synthetic_failures(dataset, spec.name))
    schema = table_schema(catalog, "synthetic_events")
    log_schema = table_schema(catalog, "generation_log")
    failures_schema = table_schema(catalog, "generation_failures")
    deps = [AssetDep(names.weekly_segments(dataset).key,  # its data version covers the user's profile too
                     partition_mapping=MultiToSingleDimensionPartitionMapping(partition_dimension_name=USER))]
    inputs = synthetic_inputs(dataset, spec)
    deps += [AssetDep(key) for key in inputs]
    version = synthetic_code_version(spec, catalog)

    @asset(
        key=table.key,
        deps=deps,
        partitions_def=user_weeks(dataset),
        backfill_policy=BackfillPolicy.single_run(),
        group_name=SYNTHETIC_GROUP,
        description=f"Synthetic events from generator `{spec.name}` ({spec.kind}); partition (user, week) "
        f"holds what was generated from that user's real week: {spec.samples_per_week} sampled week(s), column "
        f"`sample`. Per generated week accounting in "
        f"`{table_log.schema}.{table_log.name}`, every failed generation in `{table_failures.schema}.{table_failures.name}`. "
        f"{spec.description}",
        code_version=version,
        metadata=schema_entry("synthetic_events"),
        kinds={"duckdb", "python"},
    )
    def synthetic(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
        keys = [user_weeks(dataset).get_partition_key_from_str(key).keys_by_dimension for key in context.partition_keys]
        requested = [(key[USER], key[WEEK]) for key in keys]
        model = kind.from_table(warehouse.query(f"SELECT * FROM {names.generator_model(dataset, spec.name).sql}")) \
            if spec.needs_fit else None
        users = sorted({user for user, _ in requested})
        prefix = input_version_prefix(context.instance, version, inputs)
        segment_versions = dict(warehouse.query(
            f"SELECT user_id, version FROM {names.weekly_segments_versions(dataset).sql} WHERE list_contains(?, user_id)", [users]
        ).itertuples(index=False))
        histories = dict(tuple(warehouse.query(
            f"SELECT * FROM {names.weekly_segments(dataset).sql} WHERE list_contains(?, user_id) ORDER BY user_id, ts", [users]
        ).groupby("user_id")))
        profiles = warehouse.query(
            f"SELECT * FROM {names.profiles(dataset).sql} WHERE list_contains(?, user_id)", [users]
        ).set_index("user_id")[PROFILE_ATTRIBUTES].to_dict("index")
        visible = {user: visible_weeks(segments) for user, segments in histories.items()}
        tasks = [
            WeekTask(user, week, histories[user][histories[user]["week"] <= week], profiles.get(user, {}),
                     stable_seed(spec.seed, dataset, user, week))
            for user, week in requested
            if week in visible.get(user, ())  # else no real week, or one in validation/test: nothing generated
        ]
        # sample 0 is what a one-sample declaration generates; each further sample the same tasks seeded apart
        samples = [tasks, *([replace(task, seed=stable_seed(spec.seed, dataset, task.user, task.week, sample))
                             for task in tasks] for sample in range(1, spec.samples_per_week))]
        with_real_week = {user: set(segments["week"]) for user, segments in histories.items()}
        real_weeks = sum(week in with_real_week.get(user, ()) for user, week in requested)
        started = time.perf_counter()
        generation = generation_context(project, dataset, warehouse)
        # one call per sample: a kind sees each (user, week) once a call, as it did before samples
        # (BehaviorGen without segmentation writes all of a user's weeks in one conversation)
        generated_weeks = [(sample, task, result) for sample, tasks in enumerate(samples) if tasks
                           for task, result in zip(tasks, kind.generate_weeks(model, tasks, spec.settings, generation))]
        seconds = time.perf_counter() - started
        frames = [result.events.assign(
            user_id=task.user, week=task.week,
            target_week=(pd.Timestamp(task.week) + pd.Timedelta(days=7)).strftime("%Y-%m-%d"), sample=sample,
            generator=spec.name,
        ) for sample, task, result in generated_weeks if result.status == "ok"]
        generated = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(schema.columns))
        generated = validate(schema, generated[list(schema.columns)])
        log = pd.DataFrame([
            {"user_id": task.user, "week": task.week, "sample": sample, "generator": spec.name, "status": result.status,
             "n_events": len(result.events), **LOG_DEFAULTS, **result.log,
             "input_version": input_version(prefix, segment_versions[task.user])}
            for sample, task, result in generated_weeks
        ], columns=list(log_schema.columns))
        log = validate(log_schema, log)
        failures = validate(failures_schema, log[log["status"] == "failed"].assign(run_id=context.run.run_id))
        partitions = pd.DataFrame(requested, columns=["user_id", "week"])
        warehouse.replace_partitions(dataset, {table.name: generated, table_log.name: log}, partitions,
                                     appended={table_failures.name: failures})
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(generated)),
            metadata={
                "dagster/row_count": len(generated),
                "partitions": len(requested),
                "partitions_without_real_week": len(requested) - real_weeks,
                "partitions_beyond_training": real_weeks - len(tasks),
                "generate_seconds": round(seconds, 3),
                "process_peak_rss_mb": peak_rss_mb(),
                "events_per_week": round(len(generated) / max(len(log), 1), 2),
                **accounting(log, kind.token_prices(spec.settings)),
            },
        )

    return synthetic


def synthetic_inputs(dataset: str, spec: GeneratorSpec) -> list[AssetKey]:
    """The unpartitioned assets a synthetic table is generated from, besides the users' segments."""
    inputs = [names.sql_model(dataset, "vocabulary").key] if generator_kind(spec.kind).needs_vocabulary else []
    return inputs + ([names.generator_model(dataset, spec.name).key] if spec.needs_fit else [])


def generator_assets(project: Project, catalog: Catalog, dataset: str, spec: GeneratorSpec) -> list[AssetsDefinition]:
    fitted = [model_asset(project, dataset, spec)] if spec.needs_fit else []
    return fitted + [synthetic_asset(project, catalog, dataset, spec)]
