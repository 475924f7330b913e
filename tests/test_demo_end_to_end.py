"""The README's `bgen` lines, then `bgen demo`, as a user runs them (subprocesses on one state
directory), on fixture data: generation, evaluation with the privacy gate, the experiments,
result tables and reports. The one slow test: the work the README's lines did, the demo
reuses."""

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from bgen_assets.config import PROJECT_ROOT, load_project
from conftest import SUBPROCESS_TIMEOUT, write_project
from test_readme_commands import runnable_bgen_lines


@pytest.mark.slow
@pytest.mark.timeout(5 * SUBPROCESS_TIMEOUT)  # README lines and two demo runs, offline LLM and trainings included
def test_readme_lines_then_demo_build_both_datasets_and_print_counts(tmp_path, fixture_data):
    def with_behaviorgen_user(raw):  # 1004 is a BehaviorGen demo user (one offline-model batch); 638 is individual
        raw["scopes"]["demo"]["tokyo"]["users"] = ["1004", "638"]
        raw["scopes"]["demo"]["ubiqlog"]["users"] = ["9_M"]   # the fixture's individual UbiqLog user

    project_file = write_project(tmp_path, fixture_data, with_behaviorgen_user)
    env = {k: v for k, v in os.environ.items() if k not in ("BGEN_HOME", "BGEN_SCOPE", "DAGSTER_HOME")}
    env.update(BGEN_PROJECT=str(project_file), COLUMNS="200")
    bgen = Path(sys.executable).parent / "bgen"
    ran = {}
    for arguments in runnable_bgen_lines():  # in README order: generate and evaluate come before the demo
        line = subprocess.run([str(bgen), *arguments], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                              timeout=SUBPROCESS_TIMEOUT)
        assert line.returncode == 0, f"bgen {' '.join(arguments)}:\n{line.stdout[-3000:]}{line.stderr[-3000:]}"
        ran[" ".join(arguments)] = line.stdout
    assert {"run", "user", "build", "home"} <= {arguments.split()[0] for arguments in ran}
    assert any(" weeks/s " in output for output in ran.values())  # the live generation rate
    assert "tokyo/synthetic_behaviorgen: 0 partition(s) materialised" in ran["user tokyo 1004"]  # its weeks: done above

    result = subprocess.run([str(bgen), "demo"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=2 * SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " · valid loss " in result.stdout  # the running training's live epochs
    for noise in ("Warning:", " INFO "):   # a library's warning or routine log line is not news for the demo's reader
        assert noise not in result.stdout + result.stderr, noise

    project = load_project(project_file)
    with duckdb.connect(str(project.warehouse_path), read_only=True) as con:
        for dataset, selection in project.scopes["demo"].items():
            events, users = con.execute(f"SELECT count(*), count(DISTINCT user_id) FROM {dataset}.events").fetchall()[0]
            synthetic_users = {u for (u,) in con.execute(f"SELECT DISTINCT user_id FROM {dataset}.synthetic_markov").fetchall()}
            synthetic = con.execute(f"SELECT count(*) FROM {dataset}.synthetic_markov").fetchall()[0][0]
            assert set(selection.users) <= synthetic_users  # the README's full-scope line generated the rest
            assert synthetic > 0
            row = next(line for line in result.stdout.splitlines()
                       if line.strip().startswith(f"│ {dataset}") and "synthetic_markov" in line)
            assert f"{events:,}" in row and f"{synthetic:,}" in row and f" {users} " in row
        behaviorgen = con.execute("SELECT count(*), bool_and(pass_at_1), sum(completion_tokens) "
                                  "FROM tokyo.synthetic_behaviorgen_log").fetchall()[0]
        tables = con.execute("SELECT experiment, generator, scenario FROM tokyo.utility_results WHERE user_id = 'all'").df()
        scored_users = {u for (u,) in con.execute("SELECT DISTINCT user_id FROM tokyo.bert4rec_real WHERE user_id <> 'all'").fetchall()}
    # 1004's two declared weeks (the README's `bgen user tokyo 1004` adds none: an on-request
    # generator runs on its scope's weeks only), each valid at once
    assert behaviorgen[0] == 2 and behaviorgen[1] and behaviorgen[2] > 0
    row = next(line for line in result.stdout.splitlines()
               if line.strip().startswith("│ tokyo") and "synthetic_behaviorgen" in line)
    assert "100%" in row
    # the two reference generators copy real weeks: the gate keeps them out of training, and says why
    for leaking in ("repeat_last_week", "other_population_week"):
        assert f"tokyo: {leaking} is not trained on: privacy gate failed" in result.stdout
    trained = set(map(tuple, tables.to_numpy()))
    for experiment in ("bert4rec", "pituning"):
        assert {(experiment, "real", "pretraining"), (experiment, "real", "finetune"), (experiment, "real", "limited")} <= trained
        for generator in ("markov", "behaviorgen"):
            assert {(experiment, generator, s) for s in ("pretraining", "replacement", "augmentation")} <= trained
    assert not {row for row in trained if row[1] in ("repeat_last_week", "other_population_week")}
    assert scored_users == {"638"}  # the scope's individual user; the test events are always real
    for dataset in ("tokyo", "ubiqlog"):
        report = (project.home / "reports" / dataset / "report.html").read_text()
        assert "Table 1. Pretraining augmentation" in report and "Table 2. Fine-tuning replacement" in report
        assert "privacy gate failed" in report
        assert ("smollm2-135m-instruct via hf_local" in report) == (dataset == "tokyo")  # the model used, where it ran
        assert (project.home / "reports" / dataset / "fidelity.png").read_bytes().startswith(b"\x89PNG")
    # a second demo run finds everything up to date
    again = subprocess.run([str(bgen), "demo"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert again.returncode == 0 and "tokyo/synthetic_markov: 0 user-week(s) generated" in again.stdout
    assert "tokyo/synthetic_behaviorgen: 0 user-week(s) generated" in again.stdout
    assert "tokyo: evaluated 4 generators, rebuilt nothing" in again.stdout
