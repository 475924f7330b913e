"""`bgen demo` as a user runs it (a subprocess on its own state directory), on fixture data."""

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from bgen_assets.config import PROJECT_ROOT, load_project
from conftest import write_project


@pytest.mark.slow
def test_demo_builds_both_datasets_and_prints_counts(tmp_path, fixture_data):
    def with_behaviorgen_user(raw):  # 1004 is BehaviorGen's declared demo user: one offline-model batch
        raw["scopes"]["demo"]["tokyo"]["users"] = ["1004", "638"]

    project_file = write_project(tmp_path, fixture_data, with_behaviorgen_user)
    env = {**os.environ, "BGEN_PROJECT": str(project_file), "COLUMNS": "200"}
    bgen = Path(sys.executable).parent / "bgen"
    result = subprocess.run([str(bgen), "demo"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    project = load_project(project_file)
    with duckdb.connect(str(project.warehouse_path), read_only=True) as con:
        for dataset, selection in project.scopes["demo"].items():
            events, users = con.execute(f"SELECT count(*), count(DISTINCT user_id) FROM {dataset}.events").fetchall()[0]
            synthetic_users = {u for (u,) in con.execute(f"SELECT DISTINCT user_id FROM {dataset}.synthetic_markov").fetchall()}
            synthetic = con.execute(f"SELECT count(*) FROM {dataset}.synthetic_markov").fetchall()[0][0]
            assert synthetic_users == set(selection.users)
            assert synthetic > 0
            row = next(line for line in result.stdout.splitlines()
                       if line.strip().startswith(f"│ {dataset}") and "synthetic_markov" in line)
            assert f"{events:,}" in row and f"{synthetic:,}" in row and f" {users} " in row
        behaviorgen = con.execute("SELECT count(*), bool_and(pass_at_1), sum(completion_tokens) "
                                  "FROM tokyo.synthetic_behaviorgen_log").fetchall()[0]
    assert behaviorgen[0] == 2 and behaviorgen[1] and behaviorgen[2] > 0  # 1004's two weeks, valid at once
    row = next(line for line in result.stdout.splitlines() if "synthetic_behaviorgen" in line)
    assert "100%" in row
    # a second demo run finds everything up to date
    again = subprocess.run([str(bgen), "demo"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "synthetic_markov 0" in again.stdout
    assert "tokyo/synthetic_behaviorgen 0" in again.stdout
