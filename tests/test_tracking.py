"""A tiny training logged through MlflowTracking to a real `mlflow server` on loopback, read
back over its REST API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from bgen_assets.predictors.core import PredictorConfig, fit
from bgen_assets.tracking import EXPERIMENT_KIND_TAG, MlflowTracking, default_store
from conftest import SUBPROCESS_TIMEOUT

CONFIG = PredictorConfig(history=8, width=16, layers=1, heads=2, batch_size=64, max_epochs=3, patience=5)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a temporary sqlite store and a port the kernel chose (port 0, read back
    from uvicorn's log line); stopped (its process group) at the end."""
    folder = tmp_path_factory.mktemp("mlflow")
    log = folder / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", "0",
             "--workers", "1"],
            env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while not (serving := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert server.poll() is None, f"mlflow server exited:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        base = serving.group(1)  # uvicorn says "running" once the app has started
        assert requests.get(f"{base}/health", timeout=30).ok
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=SUBPROCESS_TIMEOUT)


def search(base: str, experiment_id: str, filter_string: str) -> list[dict]:
    reply = requests.post(f"{base}/api/2.0/mlflow/runs/search",
                          json={"experiment_ids": [experiment_id], "filter": filter_string}, timeout=30)
    reply.raise_for_status()
    return reply.json().get("runs", [])


def as_dict(entries: list[dict]) -> dict:
    return {entry["key"]: entry["value"] for entry in entries}


def test_training_runs_land_on_the_server_with_params_metrics_lineage_and_children(mlflow_server, tokyo_events):
    before = tokyo_events.ts < "2019-03-01"
    train, valid = tokyo_events[before], tokyo_events.assign(target=~before)
    tracking = MlflowTracking(tracking_uri=mlflow_server)
    lineage = {"tokyo/pretrain_real": "v-abc123", "tokyo/event_splits": "v-def456"}
    with tracking.training_run("tokyo", "bert4rec pretrain on real", config=CONFIG, params={"scenario": "pretrain"},
                               lineage=lineage) as run:
        predictor = fit(CONFIG, train, valid, on_epoch=run.log_epoch)
        run.log_metrics({"ndcg@5": 0.5, "precision": 0.25})
        run.log_model(predictor)
        with run.child("user 1004: finetune on real", lineage={"tokyo/finetune_real": "v-1004"}) as child:
            child.log_metrics({"ndcg@5": 0.6})

    parent = search(mlflow_server, run.experiment_id, "tags.mlflow.runName = 'bert4rec pretrain on real'")
    assert len(parent) == 1
    data, info = parent[0]["data"], parent[0]["info"]
    assert info["status"] == "FINISHED"
    params, tags, metrics = as_dict(data["params"]), as_dict(data["tags"]), as_dict(data["metrics"])
    assert params["backbone"] == "bert4rec" and params["history"] == "8" and params["scenario"] == "pretrain"
    assert tags["bgen.lineage.tokyo/pretrain_real"] == "v-abc123"
    assert tags["bgen.lineage.tokyo/event_splits"] == "v-def456"
    assert metrics["ndcg_at_5"] == 0.5 and metrics["precision"] == 0.25
    assert metrics["valid_loss"] == pytest.approx(predictor.history[-1]["valid_loss"])

    history = requests.get(f"{mlflow_server}/api/2.0/mlflow/metrics/get-history",
                           params={"run_id": run.run_id, "metric_key": "valid_loss"}, timeout=30).json()["metrics"]
    assert sorted(int(m["step"]) for m in history) == [1, 2, 3]
    assert sorted(m["value"] for m in history) == pytest.approx(sorted(e["valid_loss"] for e in predictor.history))

    artifacts = requests.get(f"{mlflow_server}/api/2.0/mlflow/artifacts/list",
                             params={"run_id": run.run_id, "path": "model"}, timeout=30).json()["files"]
    assert {"model/model.pt", "model/config.json", "model/vocabulary.json"} <= {f["path"] for f in artifacts}

    children = search(mlflow_server, run.experiment_id, f"tags.mlflow.parentRunId = '{run.run_id}'")
    assert [c["info"]["run_name"] for c in children] == ["user 1004: finetune on real"]
    child_tags = as_dict(children[0]["data"]["tags"])
    assert child_tags["bgen.lineage.tokyo/finetune_real"] == "v-1004"
    assert "PATH" not in child_tags and not any(k.startswith("env") for k in tags)


def test_a_failing_training_marks_its_run_failed(mlflow_server):
    tracking = MlflowTracking(tracking_uri=mlflow_server)
    with pytest.raises(RuntimeError), tracking.training_run("tokyo", "broken", config=CONFIG) as run:
        raise RuntimeError("boom")
    assert search(mlflow_server, run.experiment_id, "tags.mlflow.runName = 'broken'")[0]["info"]["status"] == "FAILED"


def test_a_sqlite_store_keeps_artifacts_under_the_declared_root(tmp_path, tokyo_events):
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path}/store/mlflow.db",
                              artifact_root=str(tmp_path / "artifacts"))
    with tracking.training_run("tokyo", "bert4rec one epoch", config=CONFIG) as run:
        run.log_model(fit(replace(CONFIG, max_epochs=1), tokyo_events))
    assert (tmp_path / "artifacts" / "tokyo" / run.run_id / "artifacts" / "model" / "model.pt").is_file()


def test_default_store_is_under_the_state_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("BGEN_MLFLOW_URI", raising=False)
    uri, artifacts = default_store(tmp_path)
    assert uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db" and artifacts == tmp_path / "mlflow" / "artifacts"
    monkeypatch.setenv("BGEN_MLFLOW_URI", "http://127.0.0.1:5999")
    assert MlflowTracking().uri() == "http://127.0.0.1:5999"
    assert MlflowTracking(tracking_uri="sqlite:///x.db").uri() == "sqlite:///x.db"


def test_experiments_are_marked_as_model_training(tmp_path):
    """Experiments are marked as model training (older ones too), and links open that view."""
    tracking = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"))
    client = tracking.client()
    older = client.create_experiment("ubiqlog")
    for dataset in ("tokyo", "ubiqlog"):
        tracking.prepare(dataset)
        assert client.get_experiment_by_name(dataset).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tracking.experiment_id(client, "ubiqlog") == older
    # MLflow 3.17's UI takes its view from the link: every link given out asks for model training
    with tracking.training_run("tokyo", "one run") as run:
        pass
    assert run.url.endswith(f"/#/experiments/{run.experiment_id}/runs/{run.run_id}?workflowType=machine_learning")
    assert sorted(tracking.model_training_links("http://127.0.0.1:5000")) == [
        f"tokyo: http://127.0.0.1:5000/#/experiments/{run.experiment_id}?workflowType=machine_learning",
        f"ubiqlog: http://127.0.0.1:5000/#/experiments/{older}?workflowType=machine_learning"]
