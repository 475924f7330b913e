"""A run's steps on Celery workers (dagster-celery), declared by `dagster.executor: celery` in
bgen_project.yml (README "Running on a cluster").

The command still plans and records each run; every step is sent through the broker to a worker,
which rebuilds the run's job from the arguments carried by the run (a reconstructable job: the
project's declaration, the declarations folder, the asset keys), so a worker needs bgen's code
and the environment below, not the project file. Workers on one machine share the warehouse
through its file lock (bgen_assets/warehouse.py); Dagster's storage must be one they all reach
(the state directory's SQLite files on one machine, PostgreSQL across machines).

Broker and result backend are read from Celery's own variables, which the workers read too:
CELERY_BROKER_URL and CELERY_RESULT_BACKEND (e.g. both redis://HOST:6379/0). The executor's
configuration names the variables, not their values, as the URLs may hold passwords. Declared,
the executor is also the code location's (bgen_assets/definitions.py): runs launched from the UI
or the dagster CLI run their steps on the workers too."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from functools import lru_cache
from pathlib import Path

from dagster import (AssetKey, AssetSelection, DagsterInstance, Definitions, ExecutorDefinition, JobDefinition,
                     build_reconstructable_job, define_asset_job, execute_job)
from dagster_celery import celery_executor

from bgen_assets.config import ConfigError, Project

CELERY_VARIABLES = {"broker": "CELERY_BROKER_URL", "backend": "CELERY_RESULT_BACKEND"}
CELERY_JOB = "bgen_on_celery"


def celery_executor_from_environment() -> ExecutorDefinition:
    """dagster-celery's executor with broker and result backend named by their variables, read
    when a run starts: the code location's executor (runs from the UI or the dagster CLI too)."""
    return celery_executor.configured({setting: {"env": variable} for setting, variable in CELERY_VARIABLES.items()},
                                      name="celery_from_environment")


@lru_cache(maxsize=2)
def _definitions(project_json: str, models_dir: str) -> Definitions:
    """The project's definitions, built once per worker process and project."""
    from bgen_assets.catalog import Catalog
    from bgen_assets.definitions import build_definitions

    project = Project.model_validate_json(project_json)
    return build_definitions(project, Catalog(project, Path(models_dir)))


def celery_job(project_json: str, models_dir: str, *keys: str) -> JobDefinition:
    """The job of one run: the assets `keys` (user strings) and their checks, on the project's
    executor (Celery, as declared)."""
    job = define_asset_job(CELERY_JOB, AssetSelection.assets(*(AssetKey.from_user_string(key) for key in keys)))
    return Definitions.merge(_definitions(project_json, models_dir), Definitions(jobs=[job])).resolve_job_def(CELERY_JOB)


def execute_on_celery(project: Project, models_dir: Path, keys: Collection[AssetKey], instance: DagsterInstance,
                      tags: Mapping[str, str], run_config: dict):
    """One run of `keys`, recorded on `instance` from this process, its steps on Celery workers."""
    missing = [variable for variable in CELERY_VARIABLES.values() if not os.environ.get(variable)]
    if missing:
        raise ConfigError(f"dagster.executor is celery: set {' and '.join(missing)} (e.g. redis://HOST:6379/0), "
                          "here and for the workers")
    job = build_reconstructable_job(__name__, celery_job.__name__, (
        project.model_dump_json(), str(models_dir), *(key.to_user_string() for key in keys)))
    return execute_job(job, instance, run_config=run_config, tags=tags)
