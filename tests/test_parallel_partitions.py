"""Two synthetic partitions materialised in parallel with the multiprocess executor raise no
DuckDB lock error.

Each `dagster asset materialize` is its own process tree (the run process plus one process per
step), all writing to the one warehouse file; the `duckdb` pool and the warehouse's lock
retries must keep every writer from failing on DuckDB's single-writer file lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
from dagster import AssetKey, DagsterInstance, materialize

from bgen_assets.config import PROJECT_ROOT, load_project
from bgen_assets.runs import Runner
from conftest import SUBPROCESS_TIMEOUT, TOKYO_USERS, project_env, write_project

BIN = Path(sys.executable).parent
USERS = TOKYO_USERS[:2]  # "1004", "1032": both have real weeks in the fixture data
LOCK_ERRORS = ("Could not set lock", "lock on file")


def test_two_synthetic_partitions_in_parallel(tmp_path, fixture_data):
    project_file = write_project(tmp_path, fixture_data)
    project = load_project(project_file)
    env = project_env(project_file)

    # DAGSTER_HOME as the CLI prepares it: <state>/dagster with the repository's dagster_instance.yaml as dagster.yaml.
    home = subprocess.run([str(BIN / "bgen"), "home"], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT, check=True).stdout.strip().splitlines()[-1]
    assert Path(home) == project.home / "dagster" and (Path(home) / "dagster.yaml").is_file()
    env["DAGSTER_HOME"] = home

    # Upstream state, in-process on that same instance: shared assets, the fitted Markov model and
    # both users' weekly segments.
    with DagsterInstance.from_config(home) as instance:
        runner = Runner.for_project(project, instance)
        runner.build_shared()
        runner.fit_generators("tokyo", ["markov"])
        for user in USERS:
            result = materialize(list(runner.defs.assets), selection=[AssetKey(["tokyo", "weekly_segments"])],
                                 partition_key=user, instance=instance, resources=runner.defs.resources)
            assert result.success

    with duckdb.connect(str(project.warehouse_path), read_only=True) as con:
        weeks = {user: con.execute("SELECT min(week) FROM tokyo.weekly_segments WHERE user_id = ?",
                                   [user]).fetchone()[0] for user in USERS}
    assert all(weeks.values()), weeks
    partitions = [f"{user}|{weeks[user]}" for user in USERS]

    # Both runs at once, each under the default (multiprocess) executor.
    launches = [
        subprocess.Popen(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "bgen_assets.definitions",
             "--select", "tokyo/synthetic_markov", "--partition", partition],
            env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for partition in partitions
    ]
    outputs = []
    try:
        for proc in launches:
            outputs.append(proc.communicate(timeout=SUBPROCESS_TIMEOUT)[0])
    finally:
        for proc in launches:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for partition, proc, output in zip(partitions, launches, outputs):
        assert proc.returncode == 0, f"partition {partition} failed:\n{output[-6000:]}"
        assert "Executing steps using multiprocess executor" in output, output[-6000:]
        assert "RUN_SUCCESS" in output, output[-6000:]
        for message in LOCK_ERRORS:
            assert message not in output, f"partition {partition}: DuckDB lock error\n{output[-6000:]}"

    # The two runs really were in flight at the same time (not one after the other).
    with DagsterInstance.from_config(home) as instance:
        runs = [r for r in instance.get_run_records() if r.dagster_run.tags.get("dagster/partition") in partitions]
    assert len(runs) == 2, [r.dagster_run.tags for r in runs]
    first, second = sorted(runs, key=lambda r: r.start_time)
    assert second.start_time < first.end_time, "the two runs did not overlap"

    with duckdb.connect(str(project.warehouse_path), read_only=True) as con:
        rows = dict(con.execute(
            "SELECT user_id || '|' || week, count(*) FROM tokyo.synthetic_markov GROUP BY ALL").fetchall())
    for partition in partitions:
        assert rows.get(partition, 0) > 0, f"no synthetic rows for {partition}: {rows}"
