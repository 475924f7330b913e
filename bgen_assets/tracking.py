"""MLflow tracking of predictor trainings, as a Dagster resource.

Store: `tracking_uri` when set, else $BGEN_MLFLOW_URI; `MlflowTracking.for_project(STATE)` defaults
to sqlite:///STATE/mlflow/mlflow.db with artifacts under STATE/mlflow/artifacts (`make mlflow`
serves the UI on that store).
One experiment per dataset, marked as model training; MLflow 3.17's UI picks its view from a
global GenAI / model-training switch instead, so the run links given out (`TrainingRun.url`,
`make mlflow`) ask for the model-training view. Every training is a run; per-user fine-tunes are child runs
(tag mlflow.parentRunId) of their configuration's run.

    tracking = MlflowTracking.for_project(project.home)
    with tracking.training_run("tokyo", "bert4rec pretrain on real+markov", config=config,
                               lineage={"tokyo/pretrain_markov": data_version}) as run:
        predictor = fit(config, train, valid, on_epoch=run.log_epoch)
        run.log_metrics(pooled)             # final figures
        run.log_model(predictor)            # artifact `model/`
        with run.child("user 1004: finetune on markov", lineage={...}) as child:
            ...
    run.run_id, run.url                     # for asset metadata

Only what the caller passes is logged (params, metrics, tags): never the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from bgen_assets import progress

LINEAGE_TAG = "bgen.lineage."   # + asset key -> data version of the training set's inputs
PARENT_TAG = "mlflow.parentRunId"
# Our experiments hold trainings, not GenAI traces: the tag says so, and MLflow 3.17's UI, which
# opens in its GenAI view by default, takes the view from this query parameter of a link.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
# A new store's "Creating initial MLflow database tables" INFO lines are routine, not news for the log.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def default_store(home: Path) -> tuple[str, Path]:
    """The local store under the state directory: (tracking URI, artifact root)."""
    return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", home / "mlflow" / "artifacts"


MLFLOW_BATCH_LIMIT = 1000   # metrics one log_batch call accepts


@dataclass
class TrainingRun:
    client: Any                       # mlflow.MlflowClient
    tracking: MlflowTracking
    dataset: str
    run_id: str
    experiment_id: str
    name: str = ""
    max_epochs: int | None = None     # from the config, for the progress display

    @property
    def url(self) -> str:
        return self.tracking.experiment_run_url(self.experiment_id, self.run_id)

    def log_epoch(self, epoch: int, figures: Mapping[str, float]) -> None:
        """Per-epoch figures as metric history (step = epoch); fits `fit(on_epoch=...)`."""
        from mlflow.entities import Metric

        self.client.log_batch(self.run_id, metrics=[Metric(_metric_name(name), float(value), _now_ms(), epoch)
                                                    for name, value in figures.items()])
        progress.report("epoch", run=self.name, epoch=epoch, max_epochs=self.max_epochs, **figures)

    def log_metrics(self, figures: Mapping[str, float], prefix: str = "") -> None:
        from mlflow.entities import Metric

        metrics = [Metric(prefix + _metric_name(name), float(value), _now_ms(), 0) for name, value in figures.items()]
        for start in range(0, len(metrics), MLFLOW_BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MLFLOW_BATCH_LIMIT])

    def log_model(self, predictor) -> None:
        """The predictor's directory (weights, config, vocabulary, history) as artifact `model/`."""
        with tempfile.TemporaryDirectory() as directory:
            self.client.log_artifacts(self.run_id, str(predictor.save(Path(directory) / "model")), "model")

    @contextmanager
    def child(self, run_name: str, **options) -> Iterator[TrainingRun]:
        with self.tracking.training_run(self.dataset, run_name, parent=self, **options) as run:
            yield run


class MlflowTracking(ConfigurableResource):
    """Where training runs are tracked (see the module docstring for the defaults)."""

    tracking_uri: str | None = Field(default=None, description="default: $BGEN_MLFLOW_URI")
    artifact_root: str | None = Field(default=None, description="default: the tracking server's")

    @classmethod
    def for_project(cls, home: Path) -> MlflowTracking:
        """$BGEN_MLFLOW_URI when set, else the local store under the project's state directory."""
        if os.environ.get("BGEN_MLFLOW_URI"):
            return cls(tracking_uri=os.environ["BGEN_MLFLOW_URI"])
        uri, root = default_store(home)
        return cls(tracking_uri=uri, artifact_root=str(root))

    def uri(self) -> str:
        uri = self.tracking_uri or os.environ.get("BGEN_MLFLOW_URI")
        if not uri:
            raise ValueError("no MLflow store: set tracking_uri or BGEN_MLFLOW_URI, or use MlflowTracking.for_project")
        return uri

    def _artifact_root(self) -> Path | None:
        return Path(self.artifact_root) if self.artifact_root else None   # else the server or store decides

    def client(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        if self.uri().startswith("sqlite:///"):
            Path(self.uri().removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.uri())

    def experiment_run_url(self, experiment_id: str, run_id: str) -> str:
        base = self.uri()
        base = base if base.startswith("http") else "http://127.0.0.1:5000"   # `make mlflow`
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"

    def run_url(self, dataset: str, run_id: str) -> str:
        return self.experiment_run_url(self.experiment_id(self.client(), dataset), run_id)

    def prepare(self, dataset: str) -> None:
        """Create the store (its schema migrations) and the dataset's experiment once, before
        several worker processes train at the same time and would race to create them."""
        client = self.client()
        self.experiment_id(client, dataset)

    def experiment_id(self, client, dataset: str) -> str:
        experiment = client.get_experiment_by_name(dataset)
        if experiment is not None:
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before the tag was set
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
            return experiment.experiment_id
        root = self._artifact_root()
        return client.create_experiment(dataset, artifact_location=(root / dataset).as_uri() if root else None,
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})

    def model_training_links(self, base_url: str) -> list[str]:
        """Each dataset's experiment, linked in MLflow's model-training view (`make mlflow` prints
        them: links inside the UI drop the view)."""
        return [f"{experiment.name}: {base_url}/#/experiments/{experiment.experiment_id}?{MODEL_TRAINING_VIEW}"
                for experiment in self.client().search_experiments()
                if experiment.tags.get(EXPERIMENT_KIND_TAG) == MODEL_TRAINING_KIND]

    @contextmanager
    def training_run(self, dataset: str, run_name: str, *, config=None, params: Mapping[str, Any] | None = None,
                     lineage: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
                     parent: TrainingRun | str | None = None) -> Iterator[TrainingRun]:
        """A run in experiment `dataset`, ended FINISHED, or FAILED when the block raises.

        config: a PredictorConfig (logged field by field) or a mapping; params: further params.
        lineage: asset key -> data version of what it was trained on (tags bgen.lineage.KEY).
        parent: the configuration's run (or its id) for a per-user child run."""
        client = self.client()
        all_tags = {"bgen.dataset": dataset, **(tags or {}),
                    **{LINEAGE_TAG + key: str(version) for key, version in (lineage or {}).items()}}
        if parent is not None:
            all_tags[PARENT_TAG] = parent if isinstance(parent, str) else parent.run_id
        experiment = self.experiment_id(client, dataset)
        run = client.create_run(experiment, run_name=run_name, tags=all_tags)
        from mlflow.entities import Param

        config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})
        tracked = TrainingRun(client, self, dataset, run.info.run_id, experiment, run_name, config.get("max_epochs"))
        client.log_batch(tracked.run_id, params=[Param(key, str(value))
                                                 for key, value in {**config, **(params or {})}.items()])
        try:
            yield tracked
        except BaseException:
            client.set_terminated(tracked.run_id, "FAILED")
            raise
        client.set_terminated(tracked.run_id, "FINISHED")


def _metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and space: ndcg@5 -> ndcg_at_5."""
    return name.replace("@", "_at_")


def _now_ms() -> int:
    return int(time.time() * 1000)
