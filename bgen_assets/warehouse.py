"""The DuckDB warehouse: short-lived connections, atomic writes, content hashes.

DuckDB allows one process per file to hold it open for writing, so every connection is opened
for one quick unit of work under an exclusive `flock` on a lock file beside the warehouse:
processes queue for the file instead of failing, and the kernel releases the lock when its
holder dies (even by SIGKILL), so a killed run never leaves a claimed slot behind. Callers
compute outside `connect()` (LLM calls, fits, training) and hold it only to read or write.
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import duckdb
import pandas as pd
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


def quoted(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'


class Warehouse(ConfigurableResource):
    """A DuckDB file (the project's is `warehouse.duckdb` in the state directory)."""

    path: str

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by close, or by the kernel when the holder dies
            connection = _connect(self.path, read_only)
            try:
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

    def replace_partitions(self, schema: str, frames: dict[str, pd.DataFrame], partitions: pd.DataFrame,
                           appended: dict[str, pd.DataFrame] | None = None) -> None:
        """Replace the rows of the given partitions (one row per partition, its key columns) in
        each table of `frames`, and add the rows of `appended` to theirs (histories, which keep
        what a partition's earlier builds wrote), in one transaction."""
        keys = " AND ".join(f't."{column}" = p."{column}"' for column in partitions.columns)
        with self.connect() as con:
            con.execute("BEGIN")
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            con.register("partitions", partitions)
            for table, frame in {**frames, **(appended or {})}.items():
                if frame.empty:  # DuckDB types an empty object column NULL, and NULL columns refuse later text
                    frame = frame.astype({column: "string" for column in frame.columns if frame[column].dtype == object})
                con.register("incoming", frame)
                con.execute(f"CREATE TABLE IF NOT EXISTS {quoted(schema, table)} AS SELECT * FROM incoming LIMIT 0")
                if table in frames:
                    con.execute(f"DELETE FROM {quoted(schema, table)} t USING partitions p WHERE {keys}")
                con.execute(f"INSERT INTO {quoted(schema, table)} BY NAME SELECT * FROM incoming")
                con.unregister("incoming")
            con.execute("COMMIT")


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
