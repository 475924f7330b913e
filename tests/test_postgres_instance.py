"""Dagster's run, event-log and schedule storage on PostgreSQL (`dagster.storage: postgres` in
bgen_project.yml, the server's URL in BGEN_DAGSTER_POSTGRES_URL): `bgen build` and `bgen user`
on the fixture project against a real server on loopback, then what the server recorded; and,
storage being shared by machines, a command marks failed only its own machine's dead runs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus

from bgen_assets.config import POSTGRES_URL_VARIABLE, PROJECT_ROOT, ConfigError, load_project
from bgen_assets.runs import HOST_TAG, PID_TAG, fail_dead_runs, instance_settings, prepare_dagster_home
from bgen_assets.up_to_date import UpToDate
from bgen_assets.warehouse import Warehouse
from conftest import SUBPROCESS_TIMEOUT, project_env, project_instance, write_project
from servers import postgres_server

BGEN = Path(sys.executable).parent / "bgen"
USER = "1004"
SYNTHETIC = AssetKey(["tokyo", "synthetic_markov"])


def bgen(env: dict[str, str], *arguments: str) -> str:
    done = subprocess.run([str(BGEN), *arguments], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 0, f"bgen {' '.join(arguments)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def recorded(url: str, query: str) -> list[tuple]:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchall()


def postgres_project(folder: Path, data: Path) -> Path:
    return write_project(folder, data, lambda raw: raw.update(dagster={"storage": "postgres"}))


def test_the_instance_names_the_url_variable_and_a_url_without_its_driver_is_refused(tmp_path, monkeypatch):
    project = load_project(postgres_project(tmp_path, tmp_path))
    settings = instance_settings(project.home / "dagster", project.dagster)
    assert settings["storage"] == {"postgres": {"postgres_url": {"env": POSTGRES_URL_VARIABLE}}}
    assert "event_log_storage" not in settings  # Dagster refuses both
    for url in ("", "postgresql://bgen:hush-hush@127.0.0.1:5432/bgen"):  # unset; SQLAlchemy 2.1 would want psycopg 3
        monkeypatch.setenv(POSTGRES_URL_VARIABLE, url)
        with pytest.raises(ConfigError, match=f"{POSTGRES_URL_VARIABLE} .*postgresql\\+psycopg2://") as refused:
            prepare_dagster_home(project)
        assert "hush-hush" not in str(refused.value)


def test_a_users_partitions_are_built_and_recorded_on_postgres(tmp_path, fixture_data, monkeypatch):
    project_file = postgres_project(tmp_path, fixture_data)
    project = load_project(project_file)
    with postgres_server() as server:
        monkeypatch.setenv(POSTGRES_URL_VARIABLE, server.dagster_url)  # for this process's instance below, as for the commands
        env = project_env(project_file)
        bgen(env, "build")
        first = bgen(env, "user", "tokyo", USER, "--generator", "markov")
        again = bgen(env, "user", "tokyo", USER, "--generator", "markov")  # staleness read back from the server

        logged = Warehouse(path=str(project.warehouse_path)).query(
            "SELECT week FROM tokyo.synthetic_markov_log WHERE user_id = ? ORDER BY week", [USER])["week"]
        assert len(logged) > 0
        assert f"tokyo/synthetic_markov: {len(logged)} partition(s) materialised" in first
        assert "tokyo/synthetic_markov: 0 partition(s) materialised" in again

        runs = recorded(server.url, "SELECT run_id, status, run_body FROM runs")
        materialized = recorded(server.url, "SELECT run_id, asset_key, partition FROM event_logs "
                                            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert runs and {status for _, status, _ in runs} == {"SUCCESS"}
        assert {run_id for run_id, _, _ in materialized} <= {run_id for run_id, _, _ in runs}
        by_asset: dict[str, set] = {}
        for _, key, partition in materialized:
            by_asset.setdefault("/".join(json.loads(key)), set()).add(partition)
        assert by_asset["tokyo/events"] == {None} and by_asset["tokyo/weekly_segments"] == {USER}
        synthetic = by_asset[SYNTHETIC.to_user_string()]
        # the user's weeks a generator may condition on, and the weeks between them without events (empty partitions)
        assert {f"{USER}|{week}" for week in logged} <= synthetic
        assert all(p is None or p == USER or p.startswith(f"{USER}|") for ps in by_asset.values() for p in ps)

        # Dagster reads the same back through the instance the command prepared; nothing went to SQLite
        home = project.home / "dagster"
        with DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_materialized_partitions(SYNTHETIC) == synthetic
            # the check that found nothing to do left an answer for the same command, which holds
            # until Dagster's tables on the server change (here: a user registered)
            for variable, value in project_env(project_file).items():
                if variable.startswith("BGEN_"):
                    monkeypatch.setenv(variable, value)  # the commands' environment: part of the fingerprint
            last_answer = UpToDate(project, ["user", "tokyo", USER, "markov", None, project.scope])
            assert last_answer.answer()["done"] == {"tokyo/weekly_segments": 0, SYNTHETIC.to_user_string(): 0}
            instance.add_dynamic_partitions("tokyo_users", ["registered_elsewhere"])
            assert last_answer.answer() is None
        assert not (home / "history").exists()
        assert server.password not in (home / "dagster.yaml").read_text()
        assert not any(server.password in json.dumps(body) for _, _, body in runs)


def test_a_command_marks_failed_only_its_own_machines_dead_runs(tmp_path):
    finished = subprocess.Popen(["true"])  # a process that has ended and been reaped: its id names none
    finished.wait()
    with project_instance(tmp_path) as instance:
        for run_id, host in (("here", socket.gethostname()), ("elsewhere", "another-machine")):
            instance.add_run(DagsterRun(job_name="bgen", run_id=run_id, status=DagsterRunStatus.STARTED,
                                        tags={PID_TAG: str(finished.pid), HOST_TAG: host}))
        assert fail_dead_runs(instance) == 1
        assert instance.get_run_by_id("here").status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id("elsewhere").status == DagsterRunStatus.STARTED  # its process may run there
