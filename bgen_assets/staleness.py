"""Which partitions are stale or missing, decided for a whole asset in a few queries.

Dagster records one data version per step, so a run over many users' partitions cannot say
whose input changed. bgen records each partition's input version beside its rows, in the same
write: `DS.weekly_segments_versions` (one hash per user of its events, parts and profile)
and the `input_version` column of `DS.synthetic_NAME_log` (the generator's code version, the
data versions of its unpartitioned inputs and the user's segments version). Comparing them with
the current versions is one SQL query per asset, however many partitions there are.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass

import pandas as pd
from dagster import AssetKey, DagsterInstance

from bgen_assets import names
from bgen_assets.assets.users import segment_versions_sql
from bgen_assets.warehouse import Warehouse, table_exists

DATA_VERSION_TAG = "dagster/data_version"
RUN_COST_IN_PARTITIONS = 250  # a run's fixed cost (~1 s) in recorded partitions (~4 ms each), measured
PART_VISIBLE_TO_GENERATORS = ("pretrain", "train")  # validation and test weeks are never conditioned on


def latest_data_version(instance: DagsterInstance, key: AssetKey) -> str | None:
    event = instance.get_latest_materialization_event(key)
    return event.asset_materialization.tags.get(DATA_VERSION_TAG) if event and event.asset_materialization else None


def input_version_prefix(instance: DagsterInstance, code_version: str, inputs: list[AssetKey]) -> str:
    """What every partition of a synthetic asset shares: its code version and the data versions of
    its unpartitioned inputs (the fitted model, the vocabulary)."""
    versions = [f"{key.to_user_string()}={latest_data_version(instance, key)}" for key in inputs]
    return "|".join([code_version, *versions]) + "|"


def input_version(prefix: str, segments_version: str) -> str:
    """A partition's input version; DuckDB's md5() computes the same in `stale_user_weeks`."""
    return hashlib.md5((prefix + segments_version).encode()).hexdigest()


def stale_users(warehouse: Warehouse, dataset: str, users: list[str] | None) -> list[str]:
    """Users whose weekly segments are missing or differ from what their events and profile give now."""
    versions = names.weekly_segments_versions(dataset)
    recorded = table_exists(warehouse, versions.schema, versions.name)
    join = f"LEFT JOIN {versions.sql} r USING (user_id)" if recorded else ""
    differs = "r.version IS DISTINCT FROM c.version" if recorded else "true"
    return warehouse.query(
        f"SELECT c.user_id FROM ({segment_versions_sql(dataset)}) c {join} "
        f"WHERE {differs} AND (? IS NULL OR list_contains(?, c.user_id)) ORDER BY c.user_id", [users, users],
    )["user_id"].tolist()


def user_week_status(warehouse: Warehouse, dataset: str, generator: str, prefix: str,
                     users: list[str] | None, max_weeks: int | None) -> pd.DataFrame:
    """Every real week a generator may condition on of the given users (None: all), with `wanted`
    (among the user's first `max_weeks` weeks) and `stale` (wanted, and the log has no row, a failed
    row, retried on the next run, or a row built from other inputs; a row per sampled week)."""
    log = names.synthetic_log(dataset, generator)
    logged = table_exists(warehouse, log.schema, log.name)
    join = f"LEFT JOIN {log.sql} l USING (user_id, week)" if logged else ""
    outdated = "l.user_id IS NULL OR l.status = 'failed' OR l.input_version IS DISTINCT FROM md5(? || v.version)" \
        if logged else "true"
    return warehouse.query(
        f"""WITH weeks AS (
              SELECT user_id, week, bool_and(part IN {PART_VISIBLE_TO_GENERATORS}) AS visible,
                     row_number() OVER (PARTITION BY user_id ORDER BY week) AS nth
              FROM {names.weekly_segments(dataset).sql} WHERE ? IS NULL OR list_contains(?, user_id) GROUP BY user_id, week)
            SELECT w.user_id, w.week, (? IS NULL OR w.nth <= ?) AS wanted,
                   (? IS NULL OR w.nth <= ?) AND bool_or({outdated}) AS stale
            FROM weeks w JOIN {names.weekly_segments_versions(dataset).sql} v USING (user_id) {join}
            WHERE w.visible GROUP BY w.user_id, w.week, w.nth ORDER BY w.user_id, w.week""",
        [users, users, max_weeks, max_weeks, max_weeks, max_weeks, *([prefix] if logged else [])],
    )


@dataclass(frozen=True)
class PartitionBlock:
    """A rectangle of a (user, week) asset that one run can materialise: users `first_user` ..
    `last_user` x weeks `first_week` .. `last_week`, both in the dimensions' registration order
    (how Dagster resolves a multi-partition range), holding `user_weeks` of the wanted stale ones."""
    first_user: str
    last_user: str
    first_week: str
    last_week: str
    user_weeks: int

    @property
    def range(self) -> tuple[str, str]:
        return f"{self.first_user}|{self.first_week}", f"{self.last_user}|{self.last_week}"


def partition_blocks(status: pd.DataFrame, user_order: list[str], week_order: list[str],
                     max_user_weeks: int) -> list[PartitionBlock]:
    """Cover exactly the stale rows of `status` (see `user_week_status`) with few rectangles, none
    touching another of its users' weeks (those keep what they hold). Rectangles grow over
    consecutive users while that holds and they stay under `max_user_weeks` stale user-weeks."""
    week_index = {week: i for i, week in enumerate(week_order)}
    user_index = {user: i for i, user in enumerate(user_order)}
    status = status.assign(w=status["week"].map(week_index), u=status["user_id"].map(user_index))
    if status[["w", "u"]].isna().any().any():
        missing = status[status[["w", "u"]].isna().any(axis=1)].iloc[0]
        raise ValueError(f"user-week {missing['user_id']}|{missing['week']} is not a registered partition")
    status = status.astype({"w": int, "u": int})
    stale_by_user = {u: sorted(g["w"]) for u, g in status[status["stale"]].groupby("u")}
    keep_by_user = {u: sorted(g["w"]) for u, g in status[~status["stale"]].groupby("u")}
    blocks: list[PartitionBlock] = []

    def touches_kept(users: range, low: int, high: int) -> bool:
        for u in users:
            kept = keep_by_user.get(u, [])
            i = bisect_left(kept, low)
            if i < len(kept) and kept[i] <= high:
                return True
        return False

    def segments(u: int) -> list[list[int]]:
        """A user's stale weeks split where a kept week lies between them."""
        runs: list[list[int]] = []
        for w in stale_by_user[u]:
            if runs and len(runs[-1]) < max_user_weeks and not touches_kept(range(u, u + 1), runs[-1][-1], w):
                runs[-1].append(w)
            else:
                runs.append([w])
        return runs

    current: list[int] | None = None  # [first user, last user, low week, high week, user-weeks]
    for u in sorted(stale_by_user):
        runs = segments(u)
        for run in runs:
            low, high = run[0], run[-1]
            if current and current[1] == u - 1 and len(runs) == 1 and current[4] + len(run) <= max_user_weeks:
                merged_low, merged_high = min(current[2], low), max(current[3], high)
                # a rectangle also records its users' weeks without real events, empty: merge while
                # that costs less than a run of its own
                extra = (u - current[0] + 1) * (merged_high - merged_low + 1) \
                    - (u - current[0]) * (current[3] - current[2] + 1) - (high - low + 1)
                if extra <= RUN_COST_IN_PARTITIONS and not touches_kept(range(current[0], u + 1), merged_low, merged_high):
                    current = [current[0], u, merged_low, merged_high, current[4] + len(run)]
                    continue
            if current:
                blocks.append(current)
            current = [u, u, low, high, len(run)]
    if current:
        blocks.append(current)
    return [PartitionBlock(user_order[a], user_order[b], week_order[low], week_order[high], n)
            for a, b, low, high, n in blocks]
