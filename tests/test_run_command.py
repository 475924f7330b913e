"""`bgen run` over a whole scope: runs of one asset's partitions side by side on one state
directory, and SIGTERM and SIGKILLs mid-generation that the next command recovers from."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import AssetKey

from bgen_assets.config import MODELS_DIR, PROJECT_ROOT, load_project
from bgen_assets.testing.loopback_server import hold, serve, stats
from bgen_assets.runs import PID_TAG, RunRequest, alive
from bgen_assets.warehouse import Warehouse, table_exists
from conftest import SUBPROCESS_TIMEOUT, TOKYO_USERS, write_project

BGEN = Path(sys.executable).parent / "bgen"


def rows_of(warehouse: Warehouse, table: str, users: list[str] | None = None) -> pd.DataFrame:
    where = "WHERE list_contains(?, user_id)" if users else ""
    return warehouse.query(f"SELECT * FROM tokyo.{table} {where} ORDER BY ALL", [users] if users else [])


def test_eight_partitions_in_parallel_on_one_state_directory(built):
    built.build_segments("tokyo", None)
    status = built.synthetic_status("tokyo", "markov", None, 4)
    weeks_per_user = status[status["wanted"]].groupby("user_id").size()
    users = weeks_per_user[weeks_per_user == 4].index[:2].tolist()
    assert len(users) == 2

    def forget_both_users():  # their partitions replaced by nothing: all 8 are missing again
        tables = ("synthetic_markov", "synthetic_markov_log")
        built.warehouse.replace_partitions("tokyo", {table: rows_of(built.warehouse, table).iloc[:0] for table in tables},
                                           rows_of(built.warehouse, "synthetic_markov_log", users)[["user_id", "week"]])

    if table_exists(built.warehouse, "tokyo", "synthetic_markov_log"):  # another test generated Markov weeks
        forget_both_users()
    assert built.generate("tokyo", "markov", users, 4) == 8  # one worker, one run: the reference rows
    reference = rows_of(built.warehouse, "synthetic_markov", users)
    reference_log = rows_of(built.warehouse, "synthetic_markov_log", users)[["user_id", "week", "status", "n_events"]]
    forget_both_users()

    parallel = dataclasses.replace(built, workers=4, user_weeks_per_run=1, stages=[])
    assert parallel.generate("tokyo", "markov", users, 4) == 8
    parallel.close()
    outcomes = parallel.stages[-1].outcomes
    assert len(outcomes) == 8  # one run per partition, each succeeded (a lock error fails its run)
    pids = {built.instance.get_run_by_id(outcome.run_id).tags[PID_TAG] for outcome in outcomes}
    assert len(pids) > 1 and str(os.getpid()) not in pids  # worker processes, not this one
    pd.testing.assert_frame_equal(rows_of(built.warehouse, "synthetic_markov", users), reference)
    log = rows_of(built.warehouse, "synthetic_markov_log", users)
    pd.testing.assert_frame_equal(log[reference_log.columns], reference_log)
    assert not built.synthetic_status("tokyo", "markov", users, 4)["stale"].any()


def test_a_failed_run_stops_the_workers_and_the_command_closes(built):
    """A run that fails in a worker fails the stage and kills the pool; closing it afterwards
    returns without waiting on the killed workers."""
    failing = dataclasses.replace(built, workers=2, stages=[])
    with pytest.raises(Exception, match="Failed to resolve asset job"):
        failing.execute("fails", [RunRequest((AssetKey(["tokyo", "no_such_asset"]),)),
                                  RunRequest((AssetKey(["tokyo", "no_such_asset_either"]),))])
    failing.close()
    assert failing._pool is None


def declare_loopback_generator(models: Path, base_url: str) -> None:
    shutil.copytree(MODELS_DIR, models)
    for declaration in (models / "generators").glob("*.yml"):
        declaration.unlink()
    for declaration in (models / "experiments").glob("*.yml"):
        declaration.unlink()
    spec = {"kind": "behaviorgen", "seed": 5, "params": {
        "backend": {"kind": "openai", "base_url": base_url, "model": "loopback", "concurrency": 1, "timeout_s": 10.0,
                    "max_retries": 2},
        "max_attempts": 1, "max_events_per_week": 12}}
    (models / "generators" / "bg_kill.yml").write_text(yaml.safe_dump(spec))


def project_file(folder: Path, data: Path, models: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)

    def edit(raw):
        raw["declarations_dir"] = str(models)
        raw["scope"] = "killed"
        raw["scopes"]["killed"] = {"tokyo": {"users": TOKYO_USERS, "max_weeks_per_user": 8}}
    return write_project(folder, data, edit)


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def bgen_run(project: Path, workers: int) -> subprocess.Popen:
    """The command as a supervisor or `cmd &` in a script starts it: with SIGINT ignored."""
    env = {k: v for k, v in os.environ.items() if k not in ("BGEN_HOME", "BGEN_SCOPE", "DAGSTER_HOME")}
    return subprocess.Popen([str(BGEN), "run", "--stage", "generate", "--workers", str(workers)],
                            env={**env, "BGEN_PROJECT": str(project)}, cwd=PROJECT_ROOT, start_new_session=True,
                            preexec_fn=ignore_sigint, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def logged_weeks(warehouse: Warehouse) -> int:
    if not table_exists(warehouse, "tokyo", "synthetic_bg_kill_log"):
        return 0
    return int(warehouse.query("SELECT count(*) AS n FROM tokyo.synthetic_bg_kill_log")["n"].iloc[0])


def wait_for(command: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not ready():
        assert command.poll() is None, f"finished before {what}:\n{command.stdout.read()[-4000:]}"
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.05)


def kill_when(command: subprocess.Popen, ready, what: str) -> None:
    """SIGKILL the command's whole process group as soon as `ready()` holds."""
    wait_for(command, ready, what)
    os.killpg(command.pid, signal.SIGKILL)
    command.wait(timeout=SUBPROCESS_TIMEOUT)


def assert_complete_or_absent(warehouse: Warehouse) -> None:
    """Every logged week has exactly its events; no events without a log row."""
    if not table_exists(warehouse, "tokyo", "synthetic_bg_kill"):
        return
    mismatched = warehouse.query(
        """SELECT l.user_id, l.week, l.n_events, count(s.ts) AS rows
           FROM tokyo.synthetic_bg_kill_log l LEFT JOIN tokyo.synthetic_bg_kill s USING (user_id, week)
           WHERE l.status = 'ok' GROUP BY ALL HAVING count(s.ts) <> l.n_events""")
    assert mismatched.empty, mismatched
    orphans = warehouse.query("""SELECT count(*) AS n FROM tokyo.synthetic_bg_kill s
                                 ANTI JOIN tokyo.synthetic_bg_kill_log l USING (user_id, week)""")
    assert orphans["n"].iloc[0] == 0


def test_a_killed_process_not_yet_reaped_counts_as_gone():
    # a killed command's workers may linger as zombies until their new parent reaps them; their
    # runs must still be marked failed by the next command
    process = subprocess.Popen(["sleep", "60"])
    assert alive(process.pid)
    process.kill()
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # ended, left unreaped
    assert not alive(process.pid)
    process.wait()


def test_sigkill_mid_generation_then_the_next_command_completes(tmp_path, fixture_data):
    with serve(latency_s=0.3, process=True) as base_url:
        models = tmp_path / "models"
        declare_loopback_generator(models, base_url)
        uninterrupted = project_file(tmp_path / "uninterrupted", fixture_data, models)
        killed = project_file(tmp_path / "killed", fixture_data, models)
        reference = bgen_run(uninterrupted, workers=1)
        output = reference.communicate(timeout=SUBPROCESS_TIMEOUT)[0]
        assert reference.returncode == 0, output[-4000:]
        expected = rows_of(Warehouse(path=str(load_project(uninterrupted).warehouse_path)), "synthetic_bg_kill")
        assert len(expected) > 0

        warehouse = Warehouse(path=str(load_project(killed).warehouse_path))
        # The server holds requests past a point, so each stop below lands mid-run on a slow machine too.
        # 0: SIGTERM (what a supervisor sends) stops the command and its workers, keeping what completed
        hold(base_url, after=2)
        served = stats(base_url)["requests"]
        stopped = bgen_run(killed, workers=2)
        wait_for(stopped, lambda: stats(base_url)["requests"] >= served + 3, "the third request")
        stopped.send_signal(signal.SIGTERM)
        output = stopped.communicate(timeout=SUBPROCESS_TIMEOUT)[0]
        assert stopped.returncode == 130 and "stopped" in output, output[-4000:]
        assert_complete_or_absent(warehouse)
        # 1: killed while the first requests wait for their answers, before any partition is written
        hold(base_url, after=0)
        served = stats(base_url)["requests"]
        kill_when(bgen_run(killed, workers=2), lambda: stats(base_url)["requests"] >= served + 2, "the second request")
        assert_complete_or_absent(warehouse)
        # 2: killed once some partitions are written and others are being generated
        written = logged_weeks(warehouse)
        hold(base_url, after=6)
        kill_when(bgen_run(killed, workers=2), lambda: logged_weeks(warehouse) > written, "a written partition")
        assert_complete_or_absent(warehouse)
        hold(base_url, None)
        # 3: the next command neither waits on the dead runs nor redoes what they wrote
        final = bgen_run(killed, workers=2)
        output = final.communicate(timeout=SUBPROCESS_TIMEOUT)[0]
        assert final.returncode == 0, output[-4000:]
    assert_complete_or_absent(warehouse)
    pd.testing.assert_frame_equal(rows_of(warehouse, "synthetic_bg_kill"), expected)
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    with DagsterInstance.from_config(str(load_project(killed).home / "dagster")) as instance:
        assert not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))  # the dead runs are marked failed
        assert instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
        assert instance.get_materialized_partitions(AssetKey(["tokyo", "synthetic_bg_kill"]))


def test_concurrent_commands_fit_a_shared_model_once(tmp_path, fixture_data):
    project = write_project(tmp_path, fixture_data)
    env = {k: v for k, v in os.environ.items() if k not in ("BGEN_HOME", "BGEN_SCOPE", "DAGSTER_HOME")}
    env["BGEN_PROJECT"] = str(project)
    build = subprocess.run([str(BGEN), "build"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                           timeout=SUBPROCESS_TIMEOUT)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    users = ["1004", "1032", "638"]  # users with check-ins in the fixture's quarter
    commands = [subprocess.Popen([str(BGEN), "user", "tokyo", user, "--generator", "markov"], env=env, cwd=PROJECT_ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for user in users]
    for command in commands:
        output = command.communicate(timeout=SUBPROCESS_TIMEOUT)[0]
        assert command.returncode == 0, output[-4000:]
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(load_project(project).home / "dagster")) as instance:
        fits = instance.fetch_materializations(AssetKey(["tokyo", "markov_model"]), limit=10).records
    assert len(fits) == 1  # the first command fitted it; the others waited on its build lock and reused it
    built_users = set(rows_of(Warehouse(path=str(load_project(project).warehouse_path)), "synthetic_markov_log")["user_id"])
    assert built_users == set(users)
