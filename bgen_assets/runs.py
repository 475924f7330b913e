"""Materialising parts of the graph as real, recorded Dagster runs on the project's instance:
the shared (unpartitioned) assets, users' weekly segments and synthetic partitions in bulk,
evaluation and training, for one user or a whole declared scope.

What is stale is decided in bulk (bgen_assets/staleness.py); the stale partitions are then
covered by as few runs as possible (rectangles of users x weeks), which `workers` processes
run side by side (bgen_assets/workers.py)."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from dagster import AssetCheckSeverity, AssetKey, AssetSelection, DagsterInstance, DagsterRunStatus, Definitions, \
    RunsFilter, materialize

from bgen_assets import names
from bgen_assets.assets.evaluation import EVALUATION_GROUP, GATE_CHECK
from bgen_assets.assets.synthetic import SYNTHETIC_GROUP, synthetic_code_version, synthetic_inputs
from bgen_assets.assets.training import TRAINING_GROUP
from bgen_assets.quality.gate import gate_verdict
from bgen_assets.catalog import Catalog
from bgen_assets.config import POSTGRES_URL_VARIABLE, PROJECT_ROOT, ConfigError, DagsterSettings, Project
from bgen_assets.dagster_adapter import stale_or_missing
from bgen_assets.partitions import users, weeks
from bgen_assets.staleness import (PART_VISIBLE_TO_GENERATORS, input_version_prefix, partition_blocks, stale_users,
                                  user_week_status)
from bgen_assets.warehouse import Warehouse

RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
PID_TAG = "bgen/pid"   # the process running a run: a run whose process is gone is marked failed
HOST_TAG = "bgen/host"  # its machine: with storage shared by machines (PostgreSQL), only there can it be found
COMPUTE_METADATA = ("generate_seconds", "fit_seconds")  # time inside generators, as asset metadata


def instance_settings(dagster_home: Path, dagster: DagsterSettings = DagsterSettings()) -> dict:
    """The repository's dagster_instance.yaml, with the event log's directory under `dagster_home`,
    or with run, event-log and schedule storage on PostgreSQL where the project declares it.
    Not named dagster.yaml: `dagster dev` run from the repository would warn that a dagster.yaml
    outside DAGSTER_HOME is ignored, though bgen copies its settings there."""
    settings = yaml.safe_load((PROJECT_ROOT / "dagster_instance.yaml").read_text())
    if dagster.storage == "postgres":  # the URL stays in the environment: it may hold a password
        del settings["event_log_storage"]
        settings["storage"] = {"postgres": {"postgres_url": {"env": POSTGRES_URL_VARIABLE}}}
        return settings
    settings["event_log_storage"]["config"] = {"base_dir": str(dagster_home / "history" / "runs")}
    return settings


def one_planned_event_per_run() -> None:
    """A run over a partition range records one 'planned' event for the range, not one per
    partition (Dagster's switch; the warehouse's log, not Dagster, says which weeks failed)."""
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")


def prepare_dagster_home(project: Project) -> str:
    """DAGSTER_HOME under the state directory, holding the instance settings (`instance_settings`)."""
    if project.dagster.storage == "postgres" and not os.environ.get(POSTGRES_URL_VARIABLE, "").startswith("postgresql+"):
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dagster-postgres installs psycopg2
        raise ConfigError(f"dagster.storage is postgres: set {POSTGRES_URL_VARIABLE} to the server's URL, naming "
                          "the driver: postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE")
    home = project.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_settings(home, project.dagster), sort_keys=False))
    os.environ["DAGSTER_HOME"] = str(home)
    one_planned_event_per_run()
    return str(home)


DATASET_SUMMARIES = (names.utility_results, names.report)   # built last, from whatever the run trained


class RunFailed(RuntimeError):
    pass


def _root_message(error) -> str:
    """The innermost cause of a step failure: the user's error, not Dagster's wrapper."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


@dataclass(frozen=True)
class RunRequest:
    """One Dagster run: assets (and what depends on them among `keys`), optionally a partition
    range, and how many units of progress it stands for."""
    keys: tuple[AssetKey, ...]
    partition_range: tuple[str, str] | None = None
    units: int = 1
    tolerated_checks: tuple[str, ...] = ()
    only_if_stale: bool = False   # checked again under the assets' build locks: another command may have built them


@dataclass
class RunOutcome:
    request: RunRequest
    run_id: str
    failed_checks: list[str]
    compute_s: float
    llm_calls: int
    cache_hits: int


@dataclass
class StageRecord:
    """What one stage of a command did: for the closing table and the benchmark."""
    name: str
    wall_s: float = 0.0
    outcomes: list[RunOutcome] = field(default_factory=list)

    def add(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)

    @property
    def units(self) -> int:
        return sum(o.request.units for o in self.outcomes)

    @property
    def compute_s(self) -> float:
        return sum(o.compute_s for o in self.outcomes)

    @property
    def llm_calls(self) -> int:
        return sum(o.llm_calls for o in self.outcomes)

    @property
    def cache_hits(self) -> int:
        return sum(o.cache_hits for o in self.outcomes)


@contextmanager
def build_lock(state_dir: Path, key: AssetKey) -> Iterator[None]:
    """Held while one process builds an asset; released by the kernel if that process dies."""
    folder = state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key.to_python_identifier()}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def alive(pid: int) -> bool:
    """Whether the process runs: a killed one not yet reaped by its new parent (a zombie, e.g. a
    worker of a command killed with SIGKILL) has ended too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no procfs: the signal test above must do
        return True
    return state != "Z"


def fail_dead_runs(instance: DagsterInstance) -> int:
    """Mark failed the runs still STARTED whose process is gone (killed with SIGKILL, say), so
    the UI tells the truth; nothing waits on them (no pool slots are ever claimed). Only this
    machine's runs: another machine's process ids mean nothing here."""
    here = socket.gethostname()
    dead = [run for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
            if PID_TAG in run.tags and run.tags.get(HOST_TAG, here) == here and not alive(int(run.tags[PID_TAG]))]
    for run in dead:
        instance.report_run_failed(run, f"its process {run.tags[PID_TAG]} is gone (killed?)")
    return len(dead)


@dataclass
class Runner:
    project: Project
    defs: Definitions
    instance: DagsterInstance
    catalog: Catalog | None = None
    workers: int = 1
    on_progress: object = None      # callable(stage, done, total, unit) for progress bars
    user_weeks_per_run: int | None = None  # default: enough runs to balance the workers, >= 25 user-weeks each
    stages: list[StageRecord] = field(default_factory=list)
    _pool: object = field(default=None, repr=False)   # the command's WorkerPool, once started

    @classmethod
    def for_project(cls, project: Project, instance: DagsterInstance, catalog: Catalog | None = None,
                    workers: int = 1) -> Runner:
        from bgen_assets.definitions import build_definitions

        catalog = catalog or Catalog(project)
        one_planned_event_per_run()
        fail_dead_runs(instance)
        return cls(project, build_definitions(project, catalog), instance, catalog, workers)

    def worker_pool(self):
        """The worker processes (started on first use, or early by `start_workers`)."""
        from bgen_assets.workers import WorkerPool

        if self._pool is None:
            self._pool = WorkerPool(self)
        return self._pool

    def start_workers(self) -> None:
        if self.workers > 1:
            self.worker_pool()

    def close(self, stopped: bool = False) -> None:
        if self._pool is None:
            return
        if stopped:
            self._pool.kill()
        else:
            self._pool.close()
        self._pool = None

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse.for_project(self.project)

    @property
    def graph(self):
        return self.defs.resolve_asset_graph()

    def materialize_request(self, request: RunRequest) -> RunOutcome:
        """One run in this process; raises RunFailed on a failed step or a failed blocking check,
        except the checks named in `tolerated_checks`, whose failures are returned.

        With `only_if_stale`, the run holds a build lock per asset (a file lock under the state
        directory) and leaves out what is no longer stale: concurrent commands that need the same
        shared asset (a fitted generator, say) build it once, the others wait and reuse it. A group
        runs whole when any of it is still stale (its later keys depend on its earlier ones)."""
        if not request.only_if_stale:
            return self._run(request)
        with ExitStack() as locks:
            for key in sorted(request.keys, key=lambda k: k.to_user_string()):
                locks.enter_context(build_lock(self.project.home, key))
            if not any(self.stale_or_missing(key) for key in request.keys):
                return RunOutcome(request, "", [], 0.0, 0, 0)  # built meanwhile by another command
            return self._run(request)

    def _run(self, request: RunRequest) -> RunOutcome:
        tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        if request.partition_range:
            tags[RANGE_START_TAG], tags[RANGE_END_TAG] = request.partition_range
        run_config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        if self.project.dagster.executor == "celery":
            from bgen_assets.cluster import execute_on_celery

            result = execute_on_celery(self.project, self.catalog.models_dir, request.keys, self.instance, tags, run_config)
        else:
            selection = AssetSelection.assets(*request.keys).downstream() & AssetSelection.assets(*request.keys)
            result = materialize([*self.defs.assets, *self.defs.asset_checks], selection=selection, instance=self.instance,
                                 resources=self.defs.resources, raise_on_error=False, tags=tags, run_config=run_config)
        step_errors = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        if any(error.cls_name == "DagsterExecutionInterruptedError" for error in step_errors):
            raise KeyboardInterrupt  # Ctrl-C or SIGTERM reached the step: the command stops
        failures = [_root_message(error) for error in step_errors  # failed checks are reported below, by name
                    if error.cls_name != "DagsterAssetCheckFailedError"]
        failed_checks = [c for c in result.get_asset_check_evaluations()
                         if not c.passed and c.severity == AssetCheckSeverity.ERROR]
        failures += [f"check {c.asset_key.to_user_string()}:{c.check_name} failed, nothing was built from it: "
                     f"{c.description}" for c in failed_checks if c.check_name not in request.tolerated_checks]
        if failures or not (result.success or failed_checks):
            raise RunFailed("\n".join(failures) or f"run {result.run_id} failed")
        metadata = {}  # per asset: a range run repeats the step's metadata on every partition
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            metadata.setdefault(materialization.asset_key, materialization.metadata)
        number = lambda values, name: sum(float(v[name].value) for v in values if name in v)  # noqa: E731
        return RunOutcome(
            request, result.run_id, [f"{c.asset_key.to_user_string()}: {c.description}" for c in failed_checks],
            compute_s=sum(number(metadata.values(), name) for name in COMPUTE_METADATA),
            llm_calls=int(number(metadata.values(), "llm_calls")), cache_hits=int(number(metadata.values(), "cache_hits")),
        )

    def _materialize(self, keys: Iterable[AssetKey], tolerated_checks: tuple[str, ...] = (),
                     partition_key: str | None = None) -> list[str]:
        """One run of `keys` (and what depends on them among them); returns the tolerated failed checks."""
        partition_range = (partition_key, partition_key) if partition_key else None
        return self.materialize_request(RunRequest(tuple(keys), partition_range, 1, tolerated_checks)).failed_checks

    def execute(self, stage: str, requests: list[RunRequest], unit: str = "runs") -> list[RunOutcome]:
        """Run the requests, on `workers` processes when more than one, reporting progress in
        `unit`s (what a request's `units` count)."""
        from bgen_assets.workers import run_requests

        total = sum(r.units for r in requests)
        record = StageRecord(stage)
        self.stages.append(record)
        started = time.perf_counter()
        if self.on_progress and requests:
            self.on_progress(stage, 0, total, unit)
        for outcome in run_requests(self, requests):
            record.add(outcome)
            record.wall_s = time.perf_counter() - started
            if self.on_progress:
                self.on_progress(stage, record.units, total, unit)
        return record.outcomes

    def _rebuild_outdated(self, stage: str, keys: list[AssetKey], tolerated_checks: tuple[str, ...] = (),
                          independent: bool = False, unit: str = "assets",
                          outdated_too: Collection[AssetKey] = ()) -> list[AssetKey]:
        """Rebuild those of `keys` that are stale or missing (or in `outdated_too`), with what
        depends on them among `keys`: one run, or one run each when `independent` (none depends on another)."""
        outdated = [key for key in keys if key in outdated_too or self.stale_or_missing(key)]
        if outdated:
            groups = [(key,) for key in outdated] if independent else [tuple(
                key for key in keys if key in AssetSelection.assets(*outdated).downstream().resolve(self.graph))]
            self.execute(stage, [RunRequest(tuple(g), None, len(g), tolerated_checks,
                                            only_if_stale=not set(g) & set(outdated_too)) for g in groups],
                         unit)
        return outdated

    def build_shared(self, datasets: Iterable[str] | None = None) -> list[AssetKey]:
        """Observe the datasets' source files (default: all), then rebuild the shared
        (unpartitioned) assets that every generator starts from, where stale or missing. Fitted
        generators and everything built from synthetic data are built for the generators a run
        asks for. Returns what was outdated."""
        datasets = list(datasets or self.project.datasets)
        graph = self.graph
        observed = [key for key in graph.get_all_asset_keys() if graph.get(key).is_observable and key.path[0] in datasets]
        self.execute("observe sources", [RunRequest(tuple(observed))], "observations")
        return self._rebuild_outdated("shared assets", self.shared_keys(datasets))

    def shared_keys(self, datasets: Iterable[str] | None = None) -> list[AssetKey]:
        """The unpartitioned assets not built from a generator and not trained or evaluated
        (sources, seeds, SQL models, users), of the given datasets (and the seeds)."""
        graph = self.graph
        from_generators = (AssetSelection.groups(SYNTHETIC_GROUP).downstream()
                           | AssetSelection.groups(TRAINING_GROUP, EVALUATION_GROUP).downstream()).resolve(graph)
        wanted = set(datasets or self.project.datasets) | {"seeds"}
        return [key for key in graph.materializable_asset_keys
                if not graph.get(key).is_partitioned and key not in from_generators and key.path[0] in wanted]

    def stale_or_missing(self, key: AssetKey) -> bool:
        """Whether an unpartitioned asset is missing or stale (a handful of them per command)."""
        return stale_or_missing(self.instance, self.graph, key)

    def user_weeks(self, dataset: str, user: str) -> list[str]:
        return self.warehouse.query(
            f"SELECT DISTINCT week FROM {names.weekly_segments(dataset).sql} WHERE user_id = ? ORDER BY week", [user]
        )["week"].tolist()

    def scoped_generators(self, dataset: str, scope: str | None = None) -> list[tuple]:
        """The generators a scope builds for a dataset, each with its selection of users and weeks
        (declarations whose scope names no users, such as ablations or GPU-only ones, are left out)."""
        from bgen_assets.generators import load_generator_specs

        scope = scope or self.project.scope
        scoped = [(spec, spec.selection(scope, dataset, self.project.selection(dataset, scope)))
                  for spec in load_generator_specs(self.catalog.models_dir / "generators")]
        return [(spec, selection) for spec, selection in scoped
                if selection.users != [] and self.graph.has(names.synthetic(dataset, spec.name).key)]

    def generator_names(self, dataset: str, scope: str | None = None) -> list[str]:
        return [spec.name for spec, _ in self.scoped_generators(dataset, scope)]

    def synthetic_keys(self, dataset: str, generator: str | None) -> list[AssetKey]:
        generators = self.generator_names(dataset) if generator is None else [generator]
        return [key for key in (names.synthetic(dataset, name).key for name in generators) if self.graph.has(key)]

    def build_segments(self, dataset: str, user_ids: list[str] | None) -> int:
        """The users' weekly segments where missing or stale, in as few runs as registration order
        allows (one when every user is stale). Returns how many users were rebuilt."""
        stale = set(stale_users(self.warehouse, dataset, user_ids))
        order = self.instance.get_dynamic_partitions(users(dataset).name)
        runs: list[list[str]] = []
        for position, user in enumerate(order):
            if user in stale:
                if runs and order[position - 1] == runs[-1][-1]:
                    runs[-1].append(user)
                else:
                    runs.append([user])
        segments = names.weekly_segments(dataset).key
        self.execute(f"{dataset} weekly segments", [RunRequest((segments,), (run[0], run[-1]), len(run)) for run in runs],
                     "users")
        return len(stale)

    def fit_generators(self, dataset: str, generators: list[str]) -> list[AssetKey]:
        """The generators' fitted models (`DS/NAME_model`) where stale or missing, side by side."""
        fitted = [names.generator_model(dataset, name).key for name in generators]
        return self._rebuild_outdated(f"{dataset} fit generators", [k for k in fitted if self.graph.has(k)],
                                      independent=True, unit="fits")

    def synthetic_status(self, dataset: str, generator: str, user_ids: list[str] | None,
                         max_weeks: int | None) -> pd.DataFrame:
        """The generator's user-weeks of the given users (None: all) with `wanted` and `stale`
        (bgen_assets/staleness.py), decided in one query."""
        from bgen_assets.generators import load_generator_specs

        spec = next(s for s in load_generator_specs(self.catalog.models_dir / "generators") if s.name == generator)
        prefix = input_version_prefix(self.instance, synthetic_code_version(spec, self.catalog),
                                      synthetic_inputs(dataset, spec))
        return user_week_status(self.warehouse, dataset, generator, prefix, user_ids, max_weeks)

    def generate(self, dataset: str, generator: str, user_ids: list[str] | None, max_weeks: int | None) -> int:
        """The generator's stale or missing (user, week) partitions of the given users (None: all),
        their first `max_weeks` real weeks. Returns how many user-weeks were generated."""
        status = self.synthetic_status(dataset, generator, user_ids, max_weeks)
        stale = int(status["stale"].sum())
        if not stale:
            return 0
        runs = self.workers * max(1, min(4, stale // (50 * self.workers)))  # whole rounds of >= 50 user-weeks a run
        per_run = self.user_weeks_per_run or -(-stale // runs)
        blocks = partition_blocks(status, self.instance.get_dynamic_partitions(users(dataset).name),
                                  self.instance.get_dynamic_partitions(weeks(dataset).name), per_run)
        key = names.synthetic(dataset, generator).key
        self.execute(f"{dataset} {generator}", [RunRequest((key,), block.range, block.user_weeks) for block in blocks],
                     "weeks")
        return stale

    def check_shared_built(self, dataset: str, generators: list[str]) -> None:
        upstream = {names.sql_model(dataset, "event_splits").key, names.profiles(dataset).key,
                    names.sql_model(dataset, "vocabulary").key}
        missing = sorted(key.to_user_string() for key in upstream if self.graph.has(key) and self.stale_or_missing(key))
        if missing:
            raise RunFailed(f"shared assets missing or stale: {', '.join(missing)}; build them first with `bgen build`")

    def materialize_user(
        self, dataset: str, user: str, generator: str | None = None, max_weeks: int | None = None
    ) -> dict[str, int]:
        """One user's weekly segments and synthetic partitions (and the generators' fitted models),
        only where missing or stale.

        Returns how many partitions each asset materialised (0 everywhere = already up to date)."""
        if user not in self.instance.get_dynamic_partitions(users(dataset).name):
            raise RunFailed(f"unknown user {user!r} of dataset {dataset!r} "
                            f"(is {names.raw_events(dataset).key.to_user_string()} materialised?)")
        weeks = {generator: max_weeks} if generator is not None else self.user_generators(dataset, user, max_weeks)
        self.check_shared_built(dataset, list(weeks))
        done = {key.to_user_string(): 1 for key in self.fit_generators(dataset, list(weeks))}
        done[names.weekly_segments(dataset).key.to_user_string()] = self.build_segments(dataset, [user])
        for name, cap in weeks.items():
            done[names.synthetic(dataset, name).key.to_user_string()] = self.generate(dataset, name, [user], cap)
        return done

    def why_no_synthetic_weeks(self, dataset: str, user: str) -> str | None:
        """Why a user gets no synthetic week from any generator, if so: none of its real weeks is
        one a generator may condition on (all pretraining or fine-tune training data)."""
        weeks = self.warehouse.query(
            f"""SELECT count(*) AS weeks, count(*) FILTER (WHERE visible) AS visible FROM (
                  SELECT week, bool_and(part IN {PART_VISIBLE_TO_GENERATORS}) AS visible
                  FROM {names.weekly_segments(dataset).sql} WHERE user_id = ? GROUP BY week)""", [user]).iloc[0]
        if weeks["visible"]:
            return None
        return (f"none of its {weeks['weeks']} real week(s) is all training data; a generator is conditioned only on "
                "those (a fine-tuning user's later events are its validation and test data: split.train_share)")

    def user_generators(self, dataset: str, user: str, max_weeks: int | None) -> dict[str, int | None]:
        """The generators `bgen user` builds for one user, each with its week cap: those the scope
        builds for the dataset, on all the user's weeks (or `max_weeks`), except on-request ones
        (slow: an LLM, a long fit), built only for the users their scope names, on its weeks."""
        chosen = {}
        for spec, selection in self.scoped_generators(dataset):
            if not spec.on_request:
                chosen[spec.name] = max_weeks
            elif selection.users is None or user in selection.users:
                chosen[spec.name] = max_weeks if max_weeks is not None else selection.max_weeks_per_user
        return chosen

    def evaluate_generators(self, dataset: str, generators: list[str]) -> dict[str, tuple[bool, str]]:
        """Fidelity and privacy of each generator's synthetic table, where stale or missing; returns
        each generator's privacy-gate verdict (passed, reason). A failed gate is an outcome here,
        not an error: that generator is simply not trained on."""
        keys = [relation.key for generator in generators for relation in names.evaluations(dataset, generator)]
        # also where the stored verdict no longer describes the synthetic table, whatever Dagster's staleness says
        changed = {relation.key for generator in generators
                   if "is out of date" in gate_verdict(self.warehouse, dataset, generator)[1]
                   for relation in names.evaluations(dataset, generator)}
        self._rebuild_outdated(f"{dataset} evaluate", keys, tolerated_checks=(GATE_CHECK,), independent=True,
                               outdated_too=changed)
        return {generator: gate_verdict(self.warehouse, dataset, generator) for generator in generators}

    def train_experiments(self, dataset: str, experiments: list, usable: list[str]) -> list[AssetKey]:
        """The experiments' predictors on real data and with each usable generator, where stale or
        missing: real-data predictors and training sets first (the generator ones start from them),
        then the generators' side by side."""
        self.defs.resources["tracking"].prepare(dataset)
        real = list(dict.fromkeys(names.experiment_real(dataset, spec.real_name).key for spec in experiments))
        training_sets = [names.training_set(dataset, g).key for spec in experiments for g in spec.generators if g in usable]
        with_generators = [names.experiment_with(dataset, spec.name, g).key for spec in experiments
                           for g in spec.generators if g in usable]
        rebuilt = self._rebuild_outdated(f"{dataset} train on real", real + list(dict.fromkeys(training_sets)), independent=True)
        return rebuilt + self._rebuild_outdated(f"{dataset} train with generators", with_generators, independent=True,
                                              unit="predictors")

    def build_summaries(self, dataset: str) -> list[AssetKey]:
        """The dataset's result tables and report, from whatever has been trained and evaluated."""
        return self._rebuild_outdated(f"{dataset} results and report",
                                      [summary(dataset).key for summary in DATASET_SUMMARIES])
