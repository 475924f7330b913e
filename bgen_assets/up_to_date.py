"""A shortcut for a command asked again with nothing to do: loading Dagster and the asset graph
costs seconds, answering "still up to date" need not.

When a command finds nothing to do, it stores a fingerprint of everything its answer depends on:
its own arguments, the project's declaration, the code and declaration files (content), the BGEN_* environment,
the installed packages (their folder), the raw data files (size and time, as the source observation
sees an edit), the warehouse file, the partitioned tables' commit folders (a local storage root's;
every write adds a file there) and Dagster's run and event storage
(their last run, event and dynamic partition). The same command on the same fingerprint answers
at once; any difference, even one that changes nothing, takes the full check. The fingerprint is
stored only if it did not change while the full check ran, so a concurrent writer cannot make a
stale state look checked.

Light by design: standard library only (no Dagster, pandas or DuckDB), and psycopg2 where
Dagster's storage is on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sysconfig
from contextlib import closing
from pathlib import Path

from bgen_assets.config import POSTGRES_URL_VARIABLE, PROJECT_ROOT, Project

CODE_SUFFIXES = {".py", ".j2", ".sql", ".yml", ".yaml", ".csv"}
# Dagster's SQLite storage as bgen lays it out (bgen_assets/runs.py instance_settings): the queries
# read content, not file times, which SQLite checkpoints change without changing anything.
DAGSTER_STORAGE_QUERIES = {
    "history/runs.db": "SELECT max(id), max(update_timestamp) FROM runs",
    "history/runs/index.db": "SELECT (SELECT max(id) FROM event_logs), (SELECT max(id) FROM dynamic_partitions)",
}
DAGSTER_POSTGRES_QUERY = ("SELECT (SELECT max(id) FROM runs), (SELECT max(update_timestamp) FROM runs), "
                          "(SELECT max(id) FROM event_logs), (SELECT max(id) FROM dynamic_partitions)")


def _code_files(project: Project) -> list[Path]:
    folders = [PROJECT_ROOT / "bgen_assets", PROJECT_ROOT / "prompts", project.declarations]
    return sorted({path for folder in folders for path in folder.rglob("*") if path.suffix in CODE_SUFFIXES})


def _postgres_state() -> list | None:
    """The same figures from Dagster's tables on PostgreSQL (`dagster.storage: postgres`); None where
    they cannot be read (server down, no tables yet): the full check then meets the problem."""
    import psycopg2

    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        return None
    try:
        with closing(psycopg2.connect(re.sub(r"^postgresql\+\w+://", "postgresql://", url),  # libpq: no driver
                                      connect_timeout=10)) as connection, connection.cursor() as cursor:
            cursor.execute(DAGSTER_POSTGRES_QUERY)
            return [str(value) for value in cursor.fetchone()]
    except psycopg2.Error:
        return None


def _storage_state(project: Project) -> list:
    state = [["postgres", _postgres_state()]] if project.dagster.storage == "postgres" else []
    for name, query in DAGSTER_STORAGE_QUERIES.items():
        path = project.home / "dagster" / name
        if not path.exists():
            state.append([name, None])
            continue
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as connection:
            state.append([name, list(connection.execute(query).fetchone())])
    raw_files = [project.data_directory / source.file for dataset in project.datasets.values()
                 for source in dataset.sources.values()]
    commits = sorted(Path(project.storage_root).glob("*/*/_commits")) if "://" not in project.storage_root else []
    for path in (project.warehouse_path, project.warehouse_path.with_name(project.warehouse_path.name + ".wal"),
                 *raw_files, *commits):
        stat = path.stat() if path.exists() else None
        state.append([str(path), stat and [stat.st_size, stat.st_mtime_ns, stat.st_ino]])
    return state


def answers_folder(project: Project) -> Path:
    return project.home / "up_to_date"


def fingerprint(project: Project, command: list[str]) -> str:
    digest = hashlib.sha256(json.dumps(command).encode() + project.model_dump_json().encode())
    for path in _code_files(project):
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    environment = {key: value for key, value in os.environ.items() if key.startswith("BGEN_")}
    packages = Path(sysconfig.get_paths()["purelib"]).stat().st_mtime_ns  # changes when a package is (un)installed
    digest.update(json.dumps([environment, packages, _storage_state(project)], default=str).encode())
    return digest.hexdigest()


class UpToDate:
    """The stored answer of one command (by its arguments) under the project's state directory."""

    def __init__(self, project: Project, command: list[str]):
        self.project, self.command = project, command
        key = hashlib.sha256(json.dumps(command).encode()).hexdigest()[:16]
        self.path = answers_folder(project) / f"{key}.json"

    def answer(self) -> dict | None:
        """What the command found last time, if nothing it depends on changed since."""
        try:
            stored = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return stored["answer"] if stored["fingerprint"] == fingerprint(self.project, self.command) else None

    def store(self, before: str, answer: dict) -> None:
        """Keep `answer` for the fingerprint taken before the full check, if it still holds."""
        if fingerprint(self.project, self.command) == before:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            incoming = self.path.with_name(self.path.name + ".incoming")
            incoming.write_text(json.dumps({"fingerprint": before, "answer": answer}))
            os.replace(incoming, self.path)
