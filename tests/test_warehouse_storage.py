"""Partitioned tables as Parquet files: replacing and appending partitions, writers in several
processes at once, a writer killed midway, other storage roots, tables from before the files."""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid

import duckdb
import pandas as pd
import pytest

from bgen_assets import warehouse as warehouse_module
from bgen_assets.warehouse import Warehouse, table_exists

KEYS = ["user_id", "week"]


def events(user: str, weeks: list[str], label: str, per_week: int = 3) -> pd.DataFrame:
    return pd.DataFrame([{"user_id": user, "week": week, "n": n, "label": label} for week in weeks for n in range(per_week)])


def partitions(user: str, weeks: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": user, "week": weeks})


def write(warehouse: Warehouse, user: str, weeks: list[str], label: str, failures: int = 0) -> None:
    frame = events(user, weeks, label)
    log = frame[KEYS].drop_duplicates().assign(status="ok", label=label)
    failed = frame[KEYS].head(failures).assign(label=label)
    warehouse.replace_partitions("ds", {"synthetic": frame, "synthetic_log": log}, partitions(user, weeks),
                                 appended={"synthetic_failures": failed})


def rows(warehouse: Warehouse, table: str = "synthetic") -> pd.DataFrame:
    return warehouse.query(f'SELECT * FROM ds."{table}" ORDER BY ALL')


@pytest.fixture(params=["local", "memory"])
def warehouse(request, tmp_path) -> Warehouse:
    storage = str(tmp_path / "elsewhere") if request.param == "local" else f"memory://{uuid.uuid4().hex}"
    return Warehouse(path=str(tmp_path / "warehouse.duckdb"), storage=storage)


def test_replacing_partitions_shows_only_their_latest_write(warehouse):
    write(warehouse, "u1", ["w1", "w2"], "first", failures=1)
    write(warehouse, "u2", ["w1"], "first")
    write(warehouse, "u1", ["w2", "w3"], "second", failures=2)
    shown = rows(warehouse).groupby(KEYS)["label"].agg(set).to_dict()
    assert shown == {("u1", "w1"): {"first"}, ("u1", "w2"): {"second"}, ("u1", "w3"): {"second"}, ("u2", "w1"): {"first"}}
    assert len(rows(warehouse)) == 4 * 3
    assert rows(warehouse, "synthetic_log").groupby(KEYS).size().eq(1).all()
    assert rows(warehouse, "synthetic_failures")["label"].tolist() == ["first", "second", "second"]  # a history


def test_a_partition_replaced_by_no_rows_is_empty_and_tables_stay_typed(warehouse):
    write(warehouse, "u1", ["w1", "w2"], "first")
    nothing = events("u1", ["w1"], "none").iloc[:0]
    warehouse.replace_partitions("ds", {"synthetic": nothing, "synthetic_log": nothing}, partitions("u1", ["w1"]))
    assert set(rows(warehouse)["week"]) == {"w2"}
    assert table_exists(warehouse, "ds", "synthetic_failures")
    types = dict(warehouse.query('DESCRIBE ds."synthetic_failures"')[["column_name", "column_type"]].values)
    assert types == {"user_id": "VARCHAR", "week": "VARCHAR", "label": "VARCHAR"}


def test_read_only_connections_read_the_views(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    write(warehouse, "u1", ["w1"], "first")
    with duckdb.connect(warehouse.path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ds.synthetic").fetchone()[0] == 3
    assert (tmp_path / "partitions" / "ds" / "synthetic" / "_commits").is_dir()  # beside the file by default


def test_another_storage_root_is_what_the_tables_show_after_its_first_write(tmp_path):
    path = str(tmp_path / "warehouse.duckdb")
    write(Warehouse(path=path, storage=str(tmp_path / "first")), "u1", ["w1"], "first")
    moved = Warehouse(path=path, storage=str(tmp_path / "second"))
    write(moved, "u2", ["w1"], "second")
    assert set(rows(moved, "synthetic_log")["label"]) == {"second"}


def write_many(path: str, user: str, rounds: int) -> None:
    warehouse = Warehouse(path=path)
    for round_ in range(rounds):
        write(warehouse, user, ["w1", "w2", "w3"], f"{user}-{round_}")


def test_writers_in_two_processes_write_different_partitions_at_once(tmp_path):
    path = str(tmp_path / "warehouse.duckdb")
    warehouse = Warehouse(path=path)
    write(warehouse, "u0", ["w1"], "first")  # creates the views; the writers below only add files
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=write_many, args=(path, user, 10)) for user in ("u1", "u2")]
    for writer in writers:
        writer.start()
    while any(writer.is_alive() for writer in writers):  # whatever a reader sees meanwhile is whole writes
        shown = rows(warehouse)
        assert shown.groupby("user_id")["label"].nunique().eq(1).all()
        assert shown.groupby(KEYS).size().eq(3).all()
    assert [writer.exitcode for writer in writers] == [0, 0]
    final = rows(warehouse).groupby("user_id")["label"].agg(set).to_dict()
    assert final == {"u0": {"first"}, "u1": {"u1-9"}, "u2": {"u2-9"}}


def write_then_die(path: str, moment: str) -> None:
    """Write a partition and SIGKILL this process at `moment` of the write."""
    write_parquet = warehouse_module._write_parquet

    def dying(files, target, table):
        if moment == "before a file's rename":
            files.mv = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
        elif warehouse_module.COMMITS in target:  # every table's file written, not yet committed
            os.kill(os.getpid(), signal.SIGKILL)
        write_parquet(files, target, table)

    warehouse_module._write_parquet = dying
    write(Warehouse(path=path), "u1", ["w1", "w2"], "killed")


@pytest.mark.parametrize("moment", ["before a file's rename", "before the commit"])
def test_a_killed_writer_leaves_its_partitions_as_they_were(tmp_path, moment):
    path = str(tmp_path / "warehouse.duckdb")
    warehouse = Warehouse(path=path)
    write(warehouse, "u1", ["w1"], "first")
    writer = multiprocessing.get_context("spawn").Process(target=write_then_die, args=(path, moment))
    writer.start()
    writer.join()
    assert writer.exitcode == -signal.SIGKILL
    for table in ("synthetic", "synthetic_log", "synthetic_failures"):
        assert set(rows(warehouse, table).get("label", pd.Series(dtype=str))) <= {"first"}
    assert set(rows(warehouse)["week"]) == {"w1"}
    write(warehouse, "u1", ["w2"], "after")  # the next write is unaffected
    assert set(rows(warehouse)["label"]) == {"first", "after"}


def test_a_table_from_before_the_parquet_storage_becomes_its_first_write(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    for table, frame in (("synthetic", events("u1", ["w1", "w2"], "old")),
                         ("synthetic_log", events("u1", ["w1", "w2"], "old", per_week=1)),
                         ("synthetic_failures", events("u1", ["w1"], "old", per_week=1)[[*KEYS, "label"]])):
        warehouse.replace_table("ds", table, frame)
    write(warehouse, "u1", ["w2"], "new", failures=1)
    assert rows(warehouse).groupby("week")["label"].agg(set).to_dict() == {"w1": {"old"}, "w2": {"new"}}
    assert rows(warehouse, "synthetic_failures")["label"].tolist() == ["old", "new"]
    kinds = warehouse.query("SELECT DISTINCT table_type FROM information_schema.tables WHERE table_schema = 'ds'")
    assert kinds["table_type"].tolist() == ["VIEW"]
