"""The warehouse: a DuckDB file for unpartitioned tables, Parquet files for partitioned ones.

DuckDB allows one process per file to hold it open for writing, so every connection is opened
for one quick unit of work under an exclusive `flock` on a lock file beside the warehouse:
processes queue for the file instead of failing, and the kernel releases the lock when its
holder dies (even by SIGKILL), so a killed run never leaves a claimed slot behind. Callers
compute outside `connect()` (LLM calls, fits, training) and hold it only to read or write.

Partitioned tables (weekly segments, synthetic events and their logs) are written without that
lock (a write takes it only for a moment afterwards, to check its views): each write stores one Parquet file per table under the storage root (a local directory,
or any fsspec URL such as `s3://bucket/bgen`), each written to a temporary name and renamed,
then one commit file that makes them visible together. DuckDB queries them through views in
the warehouse file, which show, per partition, the rows of its latest committed write. So
processes on several machines write different partitions at once, a write cut short is
invisible, and old rows of a partition never show together with new ones. Files grow with the
number of writes (one per run), not of partitions:

    ROOT/SCHEMA/GROUP/TABLE/WRITE.parquet      rows, plus one `_covers` row per partition written
    ROOT/SCHEMA/GROUP/_commits/WRITE.parquet   the write's partitions; its presence commits it

GROUP is the first table of a write (e.g. `synthetic_markov` for it, its log and failures), and
WRITE (wall-clock nanoseconds, then a random suffix) sorts in time order, so a partition's latest
write is its largest WRITE; of two writes of one partition at once, the later started wins, whole.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
import uuid
from pathlib import Path
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import duckdb
import fsspec
from fsspec.implementations.local import LocalFileSystem
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableResource
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

def _is_lock_conflict(error: BaseException) -> bool:
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


@retry(
    retry=retry_if_exception(_is_lock_conflict),
    wait=wait_random_exponential(multiplier=0.05, max=1.0),
    stop=stop_after_delay(120),
    reraise=True,
)
def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(path, read_only=read_only)


TABLE_EXISTS = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
COMMITS = "_commits"
COVERS = "_covers"  # True on a row that only says its write replaced that partition (rows or none)
MIGRATED_WRITE = "0" * 20 + "-migrated"  # sorts before every new write: rows of a table from before the Parquet storage


def quoted(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'


class Warehouse(ConfigurableResource):
    """A DuckDB file (the project's is `warehouse.duckdb` in the state directory) and the storage
    root of its partitioned tables (a local directory or an fsspec URL; empty: `partitions/`
    beside the DuckDB file)."""

    path: str
    storage: str = ""

    @classmethod
    def for_project(cls, project) -> Warehouse:
        return cls(path=str(project.warehouse_path), storage=project.storage_root)

    @property
    def storage_root(self) -> str:
        return self.storage or str(Path(self.path).parent / "partitions")

    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return fsspec.core.url_to_fs(self.storage_root)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        files, _ = self.filesystem()
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by close, or by the kernel when the holder dies
            connection = _connect(self.path, read_only)
            try:
                if not isinstance(files, LocalFileSystem):  # DuckDB reads local paths itself, other URLs through fsspec
                    connection.register_filesystem(files)
                yield connection
            finally:
                connection.close()

    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def replace_table(self, schema: str, table: str, frame: pd.DataFrame) -> None:
        """Create or replace a table from a frame in one transaction."""
        with self.connect() as con:
            con.execute("BEGIN")
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            con.register("incoming", frame)
            con.execute(f"CREATE OR REPLACE TABLE {quoted(schema, table)} AS SELECT * FROM incoming")
            con.execute("COMMIT")

    def replace_partitions(self, schema: str, frames: dict[str, pd.DataFrame | pa.Table], partitions: pd.DataFrame,
                           appended: dict[str, pd.DataFrame] | None = None) -> None:
        """Replace the rows of the given partitions (one row per partition, its key columns) in
        each table of `frames`, and add the rows of `appended` to theirs (histories, which keep
        what a partition's earlier builds wrote), all visible at once or not at all. The files are
        written without a lock; then the DuckDB file is opened for a moment to check the views
        (created on a table's first write)."""
        files, root = self.filesystem()
        group = f"{root}/{schema}/{next(iter(frames))}"
        write = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        for table, frame in frames.items():
            _write_parquet(files, f"{group}/{table}/{write}.parquet", _with_covers(_arrow(frame), partitions))
        for table, frame in (appended or {}).items():
            _write_parquet(files, f"{group}/{table}/{write}.parquet", _arrow(frame))
        _write_parquet(files, f"{group}/{COMMITS}/{write}.parquet", _arrow(partitions))
        self._create_views(schema, group, list(frames), list(appended or {}), list(partitions.columns))

    def _create_views(self, schema: str, group: str, replaced: list[str], appended: list[str], keys: list[str]) -> None:
        """The views over a write group's tables, where missing or reading another storage root (it
        was changed: what is there is the tables' content now); a table of the same name (as
        written before the Parquet storage) becomes its group's first write."""
        files, _ = self.filesystem()
        location = group if isinstance(files, LocalFileSystem) else files.unstrip_protocol(group)
        with self.connect() as con:
            views = dict(con.execute("SELECT view_name, sql FROM duckdb_views() WHERE schema_name = ?", [schema]).fetchall())
            read_here = f"{location}/".replace("'", "''")  # as the views' SQL quotes it
            if all(read_here in views.get(table, "") for table in replaced + appended):
                return
            existing = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                                        "WHERE table_schema = ?", [schema]).fetchall())
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            old = [table for table in replaced + appended if existing.get(table) == "BASE TABLE"]
            on = ", ".join(f'"{key}"' for key in keys)
            for table in old:
                rows = con.sql(f"SELECT * FROM {quoted(schema, table)}").to_arrow_table()
                covered = con.execute(f"SELECT DISTINCT {on} FROM {quoted(schema, table)}").df()
                _write_parquet(files, f"{group}/{table}/{MIGRATED_WRITE}.parquet",
                               _with_covers(rows, covered) if table in replaced else rows)
            if old:
                _write_parquet(files, f"{group}/{COMMITS}/{MIGRATED_WRITE}.parquet", pa.table({"migrated_tables": old}))
            con.execute("BEGIN")
            for table in old:
                con.execute(f"DROP TABLE {quoted(schema, table)}")
            for table in replaced:
                con.execute(f"CREATE OR REPLACE VIEW {quoted(schema, table)} AS {latest_rows_sql(location, table, keys)}")
            for table in appended:
                con.execute(f"CREATE OR REPLACE VIEW {quoted(schema, table)} AS {committed_rows_sql(location, table)}")
            con.execute("COMMIT")


def _arrow(frame: pd.DataFrame | pa.Table) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if frame.empty:  # an empty object column has no type; text is what such columns hold
        frame = frame.astype({column: "string" for column in frame.columns if frame[column].dtype == object})
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def _with_covers(rows: pa.Table, partitions: pd.DataFrame) -> pa.Table:
    """The rows and one `_covers` row per partition (its keys, nulls elsewhere), so that a table's
    own files say which partitions each write replaced, empty ones included."""
    covers = _arrow(partitions)
    flags = pa.array([False] * len(rows) + [True] * len(covers))
    return pa.concat_tables([rows, covers], promote_options="permissive").append_column(COVERS, flags)


def _write_parquet(files: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    """Write to a temporary name (which the views' `*.parquet` patterns do not match), then
    rename: the file is complete or absent."""
    files.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with files.open(temporary, "wb") as out:
        pq.write_table(table, out)
    files.mv(temporary, path)


def _committed_files_sql(group: str, table: str) -> str:
    """A table's files of committed writes, each row with its write."""
    pattern = f"{group}/{table}/*.parquet".replace("'", "''")
    commits = f"{group}/{COMMITS}/*.parquet".replace("'", "''")
    return f"""SELECT *, parse_filename(filename, true) AS _write
               FROM read_parquet('{pattern}', filename = true, union_by_name = true)
               WHERE parse_filename(filename, true) IN (SELECT parse_filename(file, true) FROM glob('{commits}'))"""


def latest_rows_sql(group: str, table: str, keys: list[str]) -> str:
    """Each partition's rows from its latest committed write. A write counts for a table only once
    its file is among those read, so a query that lists files while a write commits sees it whole
    or not at all."""
    on = ", ".join(f'"{key}"' for key in keys)
    return f"""WITH files AS ({_committed_files_sql(group, table)}),
                    latest AS (SELECT {on}, max(_write) AS _write FROM files WHERE {COVERS} GROUP BY ALL)
               SELECT * EXCLUDE (filename, _write, {COVERS}) FROM files SEMI JOIN latest USING ({on}, _write)
               WHERE NOT {COVERS}"""


def committed_rows_sql(group: str, table: str) -> str:
    """Every committed write's rows (a history that keeps earlier builds' rows)."""
    return f"SELECT * EXCLUDE (filename, _write) FROM ({_committed_files_sql(group, table)})"


def table_exists(warehouse: Warehouse, schema: str, table: str) -> bool:
    return bool(warehouse.query(TABLE_EXISTS, [schema, table]).iloc[0, 0])


def table_fingerprint(warehouse: Warehouse, schema: str, table: str) -> tuple[int, str]:
    """Row count and an order-independent content hash computed inside DuckDB."""
    rows, digest = warehouse.query(
        f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR FROM {quoted(schema, table)} t"
    ).iloc[0]
    return int(rows), hashlib.sha256(f"{rows}:{digest}".encode()).hexdigest()[:24]


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of a frame (row order included), used as the Dagster data version."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return digest.hexdigest()[:24]
