"""A command asked again with nothing to do answers from its stored fingerprint, and only while
nothing it depends on has changed: its arguments, declarations, environment, raw data files,
warehouse and Dagster's run and event storage. Hand-made state files; no Dagster."""

from __future__ import annotations

import shutil
import sqlite3

from bgen_assets.config import MODELS_DIR, load_project
from bgen_assets.up_to_date import UpToDate, fingerprint
from conftest import write_project

COMMAND = ["user", "tokyo", "1004", "markov", None, "demo"]
ANSWER = {"tokyo/weekly_segments": 0, "tokyo/synthetic_markov": 0}


RUNS, EVENTS = "history/runs.db", "history/runs/index.db"
TABLES = {RUNS: ["runs(id INTEGER PRIMARY KEY, update_timestamp TEXT)"],
          EVENTS: ["event_logs(id INTEGER PRIMARY KEY)", "dynamic_partitions(id INTEGER PRIMARY KEY)"]}


def execute(home, name: str, *statements: str) -> None:
    """Statements on one of Dagster's SQLite files as bgen lays them out (created when absent)."""
    path = home / "dagster" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)


def checked(project) -> UpToDate:
    """The answer stored as a full check would store it, having found nothing to do."""
    last = UpToDate(project, COMMAND)
    last.store(fingerprint(project, COMMAND), ANSWER)
    assert last.answer() == ANSWER
    return last


def test_the_stored_answer_holds_only_while_nothing_it_depends_on_changes(tmp_path, fixture_data, monkeypatch):
    models, data = tmp_path / "models", tmp_path / "data"
    shutil.copytree(MODELS_DIR, models)
    shutil.copytree(fixture_data, data)
    project = load_project(write_project(tmp_path, data, lambda raw: raw.update(declarations_dir=str(models))))
    for name, tables in TABLES.items():
        execute(project.home, name, *(f"CREATE TABLE {table}" for table in tables))
    last = UpToDate(project, COMMAND)
    assert last.answer() is None  # never checked
    checked(project)
    assert UpToDate(project, [*COMMAND[:3], "seqgan", *COMMAND[4:]]).answer() is None  # another command

    changes = [
        lambda: execute(project.home, EVENTS, "INSERT INTO event_logs DEFAULT VALUES"),  # e.g. a run in the UI
        lambda: execute(project.home, EVENTS, "INSERT INTO dynamic_partitions DEFAULT VALUES"),  # a new user
        lambda: execute(project.home, RUNS, "INSERT INTO runs (update_timestamp) VALUES ('now')"),
        lambda: project.warehouse_path.write_bytes(b"a table was written"),
        lambda: (models / "generators" / "markov.yml").write_text(
            (models / "generators" / "markov.yml").read_text() + "\n# edited\n"),
        lambda: monkeypatch.setenv("BGEN_MLFLOW_URI", "http://127.0.0.1:5999"),
        lambda: (data / "tokyo_checkins.csv.gz").write_bytes((data / "tokyo_checkins.csv.gz").read_bytes() + b"\0"),
    ]
    for change in changes:
        last = checked(project)
        change()
        assert last.answer() is None, change

    last = checked(project)
    before = fingerprint(project, COMMAND)
    execute(project.home, EVENTS, "INSERT INTO event_logs DEFAULT VALUES")  # written while the full check ran
    last.path.unlink()
    last.store(before, ANSWER)
    assert not last.path.exists() and last.answer() is None
