"""Steps on Celery workers (`dagster.executor: celery`): a Redis broker and two Celery worker
processes on loopback generate several users' synthetic partitions; the rows equal an in-process
run's, and both workers ran steps (each step's Dagster record names the worker that ran it)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType

from bgen_assets.cluster import CELERY_VARIABLES, execute_on_celery
from bgen_assets.config import ConfigError, DagsterSettings, load_project
from bgen_assets.runs import Runner
from conftest import TOKYO_USERS, project_instance, write_project
from servers import redis_server, stop, wait_until

CELERY = Path(sys.executable).parent / "celery"
USERS = TOKYO_USERS[:3]
WEEKS = 4
WORKERS = ("bgen-a", "bgen-b")


@contextmanager
def celery_worker(name: str, log: Path) -> Iterator[None]:
    """One worker process of dagster-celery's app, running one step at a time in itself (solo pool)."""
    with open(log, "w") as output:
        process = subprocess.Popen([str(CELERY), "-A", "dagster_celery.app", "worker", "--pool", "solo",
                                    "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip",
                                    "--without-mingle"], stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: " ready." in log.read_text(), process, f"Celery worker {name}", log)
        yield
    finally:
        stop(process)


def synthetic_rows(runner: Runner) -> pd.DataFrame:
    return runner.warehouse.query("SELECT * FROM tokyo.synthetic_markov WHERE list_contains(?, user_id) ORDER BY ALL",
                                  [USERS])


def forget_users(runner: Runner) -> None:
    """The users' synthetic partitions replaced by nothing: all are missing again."""
    tables = ("synthetic_markov", "synthetic_markov_log")
    empty = {table: runner.warehouse.query(f"SELECT * FROM tokyo.{table} LIMIT 0") for table in tables}
    logged = runner.warehouse.query("SELECT user_id, week FROM tokyo.synthetic_markov_log WHERE list_contains(?, user_id)",
                                    [USERS])
    runner.warehouse.replace_partitions("tokyo", empty, logged)


def celery_workers_of(runner: Runner, run_id: str) -> set[str]:
    """The workers that ran the run's steps, as dagster-celery records them on each step."""
    engine_events = runner.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
    metadata = [entry.dagster_event.engine_event_data.metadata for entry in engine_events]
    return {entries["Celery worker"].value.split("@")[0] for entries in metadata if "Celery worker" in entries}


@pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")  # dagster-celery's, once a step
def test_users_partitions_on_two_celery_workers_equal_an_in_process_run(tmp_path, fixture_data, monkeypatch):
    project = load_project(write_project(tmp_path, fixture_data))
    with ExitStack() as servers:
        broker = servers.enter_context(redis_server())
        for variable in CELERY_VARIABLES.values():
            monkeypatch.setenv(variable, broker)  # for the workers started below and for this process
        for name in WORKERS:  # they start while the shared assets are built
            servers.enter_context(celery_worker(name, tmp_path / f"{name}.log"))
        instance = servers.enter_context(project_instance(tmp_path / "dagster"))  # on disk: the workers open it too

        in_process = Runner.for_project(project, instance)
        in_process.build_shared()
        in_process.fit_generators("tokyo", ["markov"])
        in_process.build_segments("tokyo", USERS)
        generated = in_process.generate("tokyo", "markov", USERS, WEEKS)
        assert generated >= 2 * len(WORKERS)
        reference = synthetic_rows(in_process)
        forget_users(in_process)

        on_celery = dataclasses.replace(in_process, project=project.model_copy(
            update={"dagster": DagsterSettings(executor="celery")}), user_weeks_per_run=1, stages=[])
        assert on_celery.generate("tokyo", "markov", USERS, WEEKS) == generated
        pd.testing.assert_frame_equal(synthetic_rows(on_celery), reference)
        assert not on_celery.synthetic_status("tokyo", "markov", USERS, WEEKS)["stale"].any()

        runs = [outcome.run_id for outcome in on_celery.stages[-1].outcomes]
        assert len(runs) >= len(WORKERS)
        workers_per_run = [celery_workers_of(on_celery, run_id) for run_id in runs]
        assert all(workers_per_run)  # every run's steps (the asset's, its checks') went to the workers
        assert set().union(*workers_per_run) == set(WORKERS)


def test_celery_without_its_variables_is_refused_naming_them(tmp_path, monkeypatch):
    for variable in CELERY_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    project = load_project(write_project(tmp_path, tmp_path, lambda raw: raw.update(dagster={"executor": "celery"})))
    with pytest.raises(ConfigError, match="set CELERY_BROKER_URL and CELERY_RESULT_BACKEND"):
        execute_on_celery(project, project.declarations, [], instance=None, tags={}, run_config={})
