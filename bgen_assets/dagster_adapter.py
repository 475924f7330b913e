"""The one module that uses Dagster's internals (`dagster._...`), each use pinned by
tests/test_dagster_adapter.py so that a Dagster release that changes them fails there first.

Staleness: `stale_or_missing` asks Dagster's own stale-status resolver (what the UI shows),
which has no public API.

The event log: Dagster's own `SqliteEventLogStorage` opens a new engine and connection for every event and
commits it with a full journal sync, about 17 ms an event here: a run over thousands of
(user, week) partitions spent more time recording its materializations than generating them.
This subclass keeps one engine per database file (a few, least recently used first out) and
puts the files in WAL mode with `synchronous=NORMAL` (durable across process crashes; a power
cut may lose the last events, never corrupt the file). Same files, same schema: `dagster dev`
and plain Dagster read them as before. Configured in dagster_instance.yaml (`event_log_storage`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from dagster import AssetKey, DagsterInstance
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection

KEPT_ENGINES = 8            # the index shard and the few run shards being written
BUSY_TIMEOUT_SECONDS = 120  # several bgen workers write the index shard at once


def _fast_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict = OrderedDict()
        self._tables_present: set[str] = set()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = create_engine(self.conn_string_for_shard(shard), connect_args={"timeout": BUSY_TIMEOUT_SECONDS})
                event.listen(engine, "connect", _fast_pragmas)
                if shard not in self._initialized_dbs:
                    self._initdb(engine)
                    self._initialized_dbs.add(shard)
                self._engines[shard] = engine
                while len(self._engines) > KEPT_ENGINES:
                    self._engines.popitem(last=False)[1].dispose()
            self._engines.move_to_end(shard)
            with engine.connect() as connection, connection.begin():
                yield connection

    def has_table(self, table_name: str) -> bool:
        """Asked on every stored event; a table, once there, stays (Dagster asks with a new engine)."""
        if table_name not in self._tables_present and super().has_table(table_name):
            self._tables_present.add(table_name)  # asked inside _connect: must not take its lock
        return table_name in self._tables_present

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        super().dispose()


def stale_or_missing(instance: DagsterInstance, asset_graph, key: AssetKey) -> bool:
    """Whether an unpartitioned asset is missing or stale (its code version, or an input's data
    version, differs from what its last materialization recorded), as the UI shows it."""
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=datetime.now(timezone.utc), last_event_id=None),
                          instance=instance, asset_graph=asset_graph)
    return CachingStaleStatusResolver(instance, asset_graph, view).get_status(key, None) != StaleStatus.FRESH
