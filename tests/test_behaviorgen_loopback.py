"""BehaviorGen through the real asset graph against the project's OpenAI-compatible server on
loopback: faults injected, every partition completed, counts exact, retries bounded, a rerun
answered from the cache, and a planted API key found nowhere."""

import shutil

import pytest
import yaml

from dagster._serdes import serialize_value

from bgen_assets.catalog import Catalog
from bgen_assets.config import MODELS_DIR, load_project
from bgen_assets.testing.loopback_server import serve, stats
from bgen_assets.runs import RunRequest, Runner
from conftest import project_instance, write_project

PLANTED = "sk-test-PLANTED-0123456789abcdef"
FAULTS = ["429@0.05", "ok", "500", "ok", "timeout", "ok", "malformed", "ok", "truncated", "ok", "garbage", "ok", "503"]
USERS = ["1004", "638"]


def declare(models, base_url, name="bg_loopback", **params):
    spec = {
        "kind": "behaviorgen", "seed": 3,
        "params": {"backend": {"kind": "openai", "base_url": base_url, "model": "loopback",
                               "api_key_env": "BGEN_TEST_API_KEY", "concurrency": 4, "timeout_s": 1.0,
                               "max_retries": 4},
                   "max_attempts": 3, "max_events_per_week": 12, **params},
    }
    (models / "generators" / f"{name}.yml").write_text(yaml.safe_dump(spec))


@pytest.fixture
def loopback_run(tmp_path, fixture_data, monkeypatch):
    monkeypatch.setenv("BGEN_TEST_API_KEY", PLANTED)
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    for declaration in (models / "generators").glob("*.yml"):
        declaration.unlink()  # only the loopback variant: keeps the run small
    project = load_project(write_project(tmp_path, fixture_data))
    with serve(faults=FAULTS) as base_url, project_instance(tmp_path / "dagster") as instance:
        declare(models, base_url)
        runner = Runner.for_project(project, instance, Catalog(project, models))
        runner.build_shared()
        yield runner, base_url


def log_of(runner):
    return runner.warehouse.query("SELECT * FROM tokyo.synthetic_bg_loopback_log ORDER BY user_id, week")


def test_faults_still_complete_every_partition_exactly(loopback_run, capfd):
    runner, base_url = loopback_run
    for user in USERS:
        runner.materialize_user("tokyo", user, "bg_loopback", max_weeks=3)
    log = log_of(runner)
    assert len(log) == 6 and (log.status == "ok").all(), log[["user_id", "week", "status", "errors"]]
    assert not log.pass_at_1.all()  # truncated and garbage answers were re-asked
    assert (log.transport_retries <= 4 * log.attempts).all() and log.transport_retries.sum() > 0
    real = runner.warehouse.query("SELECT user_id, week, count(*) AS n FROM tokyo.weekly_segments GROUP BY ALL")
    synthetic = runner.warehouse.query("SELECT user_id, week, count(*) AS n FROM tokyo.synthetic_bg_loopback GROUP BY ALL")
    merged = log.merge(real, on=["user_id", "week"]).merge(synthetic, on=["user_id", "week"], suffixes=("_real", "_syn"))
    assert len(merged) == 6
    assert (merged.n_syn == merged.n_real.clip(upper=12)).all()  # the server copies the (capped) week shown
    served = stats(base_url)

    # a forced re-materialisation of the same partitions makes no request: all from the cache
    keys = [f"{u}|{w}" for u in USERS for w in runner.user_weeks("tokyo", u)[:3]]
    for user in USERS:
        own = [k for k in keys if k.startswith(f"{user}|")]
        runner.materialize_request(RunRequest((runner.synthetic_keys("tokyo", "bg_loopback")[0],), (own[0], own[-1])))
    assert stats(base_url)["requests"] == served["requests"]
    assert log_of(runner).llm_calls.sum() == 0 and (log_of(runner).cache_hits > 0).all()

    # the planted key is nowhere: process output, Dagster event log and metadata, warehouse, state files
    output = "".join(capfd.readouterr())
    assert PLANTED not in output
    runs = runner.instance.get_runs()
    assert runs
    for run in runs:
        for entry in runner.instance.all_logs(run.run_id):  # every event, with its asset metadata
            assert PLANTED not in serialize_value(entry)
    errors = runner.warehouse.query("SELECT string_agg(errors, ' ') FROM tokyo.synthetic_bg_loopback_log").iloc[0, 0]
    assert PLANTED not in (errors or "")
    workspace = runner.project.home.parent  # state dir, Dagster storage and compute logs, declarations
    files = [path for path in workspace.rglob("*") if path.is_file()]
    assert any(path.name == "warehouse.duckdb" for path in files)
    for path in files:
        assert PLANTED.encode() not in path.read_bytes(), path
