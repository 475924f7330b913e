"""Per-user assets of each dataset: the population/individual split, profiles, and the
user-partitioned weekly segments that every synthetic partition is generated from."""


import hashlib
from functools import cache

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    DataVersion,
    MaterializeResult,
    asset,
)

from bgen_assets import names, profile_inference
from bgen_assets.checks import schema_entry
from bgen_assets.code_versions import code_version
from bgen_assets.config import Project
from bgen_assets.domain import PROFILE_ATTRIBUTES
from bgen_assets.partitions import users
from bgen_assets.sources import load_lookup, locate, refuse_rows, require_columns
from bgen_assets.warehouse import Warehouse, frame_fingerprint

USERS_GROUP = "users"


def split_users(user_ids: list[str], population_share: float, seed: int, dataset: str) -> pd.DataFrame:
    """Deterministic split: a seeded permutation of the sorted users; the first share is population."""
    ordered = sorted(user_ids)
    dataset_seed = int.from_bytes(hashlib.sha256(dataset.encode()).digest()[:4], "little")
    permutation = np.random.default_rng([seed, dataset_seed]).permutation(len(ordered))
    n_population = round(population_share * len(ordered))
    roles = np.where(np.arange(len(ordered)) < n_population, "population", "individual")
    return pd.DataFrame({"user_id": [ordered[i] for i in permutation], "role": roles}).sort_values("user_id", ignore_index=True)


def user_split_asset(project: Project, dataset: str) -> AssetsDefinition:
    table = names.user_split(dataset)

    @asset(
        key=table.key,
        deps=[names.sql_model(dataset, "events").key],
        group_name=USERS_GROUP,
        description=f"Population vs individual users ({project.split.population_share:.0%} population, seed {project.split.seed}).",
        code_version=code_version(split_users, user_split_asset),
        metadata=schema_entry(table.name),
        kinds={"duckdb"},
    )
    def user_split(warehouse: Warehouse) -> MaterializeResult:
        user_ids = warehouse.query(f"SELECT DISTINCT user_id FROM {names.sql_model(dataset, 'events').sql}")["user_id"].tolist()
        split = split_users(user_ids, project.split.population_share, project.split.seed, dataset)
        warehouse.replace_table(dataset, table.name, split)
        counts = split["role"].value_counts()
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(split)),
            metadata={"population_users": int(counts.get("population", 0)),
                      "individual_users": int(counts.get("individual", 0))},
        )

    return user_split


def apply_profile_file(inferred: pd.DataFrame, path, table: pd.DataFrame, source) -> pd.DataFrame:
    """Overlay a declared profile file on the inferred profiles; unknown users are an error."""
    require_columns(path, table, source, ["user_id"])
    unknown = ~table["user_id"].isin(inferred["user_id"])
    if unknown.any():
        refuse_rows(path, unknown, f"profile for unknown user {table['user_id'][unknown].iloc[0]!r}", "user_id")
    profiles = inferred.set_index("user_id")
    given = table.set_index("user_id")
    for attribute in PROFILE_ATTRIBUTES:
        if attribute in given.columns:
            values = given[attribute].replace("", np.nan).dropna()
            profiles.loc[values.index, attribute] = values
            profiles.loc[values.index, f"{attribute}_source"] = "file"
    return profiles.reset_index()


def llm_profiles(project: Project, dataset: str, warehouse: Warehouse, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The rule-based profiles overlaid with an LLM's validated answers (profile_inference: llm)."""
    from bgen_assets.generators import GenerationContext, load_generator_specs
    from bgen_assets.generators.behaviorgen import make_backend, render_template
    from bgen_assets.llm import EventVocabulary
    from bgen_assets.profile_inference import SUMMARY_SQL, TOP_INTENTS_SQL, infer_profiles

    settings = project.datasets[dataset].profile_inference
    spec = next(s for s in load_generator_specs() if s.name == settings.generator)
    context = GenerationContext(dataset, project.datasets[dataset].description, project.slot_minutes,
                                EventVocabulary({}), project.home, project.model_cache)
    events = names.sql_model(dataset, "events").sql
    allowed_rows = warehouse.query(f"SELECT attribute, value FROM {names.seed('profile_values').sql}")
    allowed = {a: group["value"].tolist() for a, group in allowed_rows.groupby("attribute", sort=False)}
    return infer_profiles(
        table,
        warehouse.query(SUMMARY_SQL.format(events=events, slot=project.slot_minutes)),
        warehouse.query(TOP_INTENTS_SQL.format(events=events)),
        allowed, make_backend(spec.settings, context),
        lambda **values: render_template("profile_inference.j2", **values),
        project.datasets[dataset].description, spec.seed,
    )


def profiles_asset(project: Project, dataset: str) -> AssetsDefinition:
    profile_source = project.datasets[dataset].profile_source
    by_llm = project.datasets[dataset].profile_inference.method == "llm"
    relation = names.profiles(dataset)
    deps = [names.sql_model(dataset, "inferred_profiles").key]
    if by_llm:
        deps += [names.sql_model(dataset, "events").key, names.seed("profile_values").key]
    inferred = "inferred by an LLM from a behaviour summary (rules where its answer is invalid)" if by_llm \
        else "inferred from behaviour by the rules in models/dataset/inferred_profiles.sql"

    @asset(
        key=relation.key,
        deps=deps,
        group_name=USERS_GROUP,
        description="Profiles with the paper's five attributes: "
        + (f"from the profile file `{project.datasets[dataset].sources[profile_source].file}`, "
           f"{inferred} where it is silent." if profile_source else f"{inferred} (no profile file declared)."),
        code_version=code_version(profiles_asset, apply_profile_file, *([llm_profiles, profile_inference] if by_llm else [])),
        metadata=schema_entry(relation.name),
        kinds={"duckdb"},
    )
    def profiles(warehouse: Warehouse) -> MaterializeResult:
        table = warehouse.query(f"SELECT * FROM {names.sql_model(dataset, 'inferred_profiles').sql} ORDER BY user_id")
        accounting = {}
        if by_llm:
            table, accounting = llm_profiles(project, dataset, warehouse, table)
        if profile_source:
            source = project.datasets[dataset].sources[profile_source]
            path = locate(source, project)
            table = apply_profile_file(table, path, load_lookup(path, source), source)
        warehouse.replace_table(dataset, relation.name, table)
        sources = {a: table[f"{a}_source"].value_counts().to_dict() for a in PROFILE_ATTRIBUTES}
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(table)),
            metadata={"dagster/row_count": len(table), "value_sources": sources, **accounting},
        )

    return profiles


def segment_rows_sql(dataset: str) -> str:
    """Every user's events with their calendar week, week number and experiment part."""
    return f"""SELECT user_id, week, (dense_rank() OVER (PARTITION BY user_id ORDER BY week) - 1)::BIGINT AS week_index,
                      ts, weekday::BIGINT AS weekday, time_slot::BIGINT AS time_slot, location, intent, part
               FROM {names.sql_model(dataset, 'event_splits').sql}"""


def segment_versions_sql(dataset: str) -> str:
    """Each user's segments version: a hash of the code version, the user's rows and profile.
    The same SQL decides what is stale (current versions) and what is recorded when built."""
    return f"""WITH rows AS ({segment_rows_sql(dataset)}),
               hashed AS (SELECT user_id, md5(string_agg(concat_ws(chr(31), week, week_index, ts, weekday, time_slot,
                                 location, intent, part), chr(30) ORDER BY ts, location)) AS events_hash
                          FROM rows GROUP BY user_id)
               SELECT h.user_id, md5(concat_ws('|', '{segments_code_version()}', h.events_hash, md5(p::VARCHAR))) AS version
               FROM hashed h LEFT JOIN {names.profiles(dataset).sql} p USING (user_id)"""


@cache
def segments_code_version() -> str:
    return code_version(segment_rows_sql, segment_versions_sql, weekly_segments_asset)


def weekly_segments_asset(project: Project, dataset: str) -> AssetsDefinition:
    relation, versions_table = names.weekly_segments(dataset), names.weekly_segments_versions(dataset).name

    @asset(
        key=relation.key,
        deps=[names.sql_model(dataset, "event_splits").key, names.profiles(dataset).key],
        partitions_def=users(dataset),
        backfill_policy=BackfillPolicy.single_run(),
        group_name=USERS_GROUP,
        description="Users' events labelled with their calendar week (the generation unit) and their "
        "experiment part, one partition per user. Each user's version (a hash of the user's events, parts "
        f"and profile) is kept in `{dataset}.{versions_table}`, so a change to one user makes only "
        "that user's synthetic partitions stale.",
        code_version=segments_code_version(),
        metadata=schema_entry(relation.name),
        kinds={"duckdb"},
    )
    def weekly_segments(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
        requested = pd.DataFrame({"user_id": list(context.partition_keys)})
        with warehouse.connect() as con:  # rows and versions read in one transaction, so they agree
            con.register("requested", requested)
            con.execute("BEGIN")
            tables = {table: con.sql(f"SELECT * FROM ({sql}) WHERE user_id IN (SELECT user_id FROM requested) "
                                     "ORDER BY ALL").to_arrow_table()
                      for table, sql in ((relation.name, segment_rows_sql(dataset)),
                                         (versions_table, segment_versions_sql(dataset)))}
            con.execute("COMMIT")
        warehouse.replace_partitions(dataset, tables, requested)
        versions = tables[versions_table].select(["user_id", "version"]).to_pandas()
        return MaterializeResult(
            data_version=DataVersion(frame_fingerprint(versions)),
            metadata={"dagster/row_count": tables[relation.name].num_rows, "users": len(requested)},
        )

    return weekly_segments


def user_assets(project: Project, dataset: str) -> list[AssetsDefinition]:
    return [user_split_asset(project, dataset), profiles_asset(project, dataset), weekly_segments_asset(project, dataset)]
