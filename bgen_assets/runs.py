"""Materialising parts of the graph as real, recorded Dagster runs on the project's instance:
the shared (unpartitioned) assets, one user's partitions, and a declared scope."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from dagster import AssetCheckSeverity, AssetKey, AssetSelection, DagsterInstance, Definitions, materialize
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from bgen_assets.assets.evaluation import EVALUATION_GROUP, EVALUATION_TABLES, GATE_CHECK
from bgen_assets.assets.synthetic import SYNTHETIC_GROUP
from bgen_assets.assets.training import TRAINING_GROUP
from bgen_assets.evaluation.gate import gate_verdict
from bgen_assets.catalog import Catalog
from bgen_assets.config import PROJECT_ROOT, Project
from bgen_assets.partitions import users
from bgen_assets.warehouse import Warehouse


def prepare_dagster_home(project: Project) -> str:
    """DAGSTER_HOME under the state directory, holding a copy of the repository's dagster.yaml."""
    home = project.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return str(home)


DATASET_SUMMARIES = ("utility_results", "report")   # built last, from whatever the run trained


class RunFailed(RuntimeError):
    pass


def _root_message(error) -> str:
    """The innermost cause of a step failure: the user's error, not Dagster's wrapper."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


@dataclass
class Runner:
    project: Project
    defs: Definitions
    instance: DagsterInstance

    @classmethod
    def for_project(cls, project: Project, instance: DagsterInstance, catalog: Catalog | None = None) -> Runner:
        from bgen_assets.definitions import build_definitions

        return cls(project, build_definitions(project, catalog), instance)

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(path=str(self.project.warehouse_path))

    @property
    def graph(self):
        return self.defs.resolve_asset_graph()

    def _materialize(self, selection, tolerated_checks: tuple[str, ...] = (), **kwargs) -> list[str]:
        """One run; raises RunFailed on a failed step or a failed blocking check, except the checks
        named in `tolerated_checks`, whose failures are returned."""
        result = materialize(
            [*self.defs.assets, *self.defs.asset_checks], selection=selection, instance=self.instance,
            resources=self.defs.resources, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}, **kwargs,
        )
        failures = [_root_message(e.event_specific_data.error) for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE"  # failed checks are reported below, by name
                    and e.event_specific_data.error.cls_name != "DagsterAssetCheckFailedError"]
        failed_checks = [c for c in result.get_asset_check_evaluations()
                         if not c.passed and c.severity == AssetCheckSeverity.ERROR]
        failures += [f"check {c.asset_key.to_user_string()}:{c.check_name} failed, nothing was built from it: "
                     f"{c.description}" for c in failed_checks if c.check_name not in tolerated_checks]
        if failures or not (result.success or failed_checks):
            raise RunFailed("\n".join(failures) or f"run {result.run_id} failed")
        return [f"{c.asset_key.to_user_string()}: {c.description}" for c in failed_checks]

    def _rebuild_outdated(self, keys: list[AssetKey], tolerated_checks: tuple[str, ...] = ()) -> list[AssetKey]:
        """Rebuild those of `keys` that are stale or missing, with what depends on them among `keys`."""
        outdated = [key for key in keys if self.stale_or_missing(key, [None])]
        if outdated:
            self._materialize(AssetSelection.assets(*outdated).downstream() & AssetSelection.assets(*keys),
                              tolerated_checks)
        return outdated

    def build_shared(self) -> list[AssetKey]:
        """Observe the source files, then rebuild the shared (unpartitioned) assets that every
        generator starts from, where stale or missing. Fitted generators and everything built
        from synthetic data are built for the generators a run asks for. Returns what was outdated."""
        graph = self.graph
        self._materialize([key for key in graph.get_all_asset_keys() if graph.get(key).is_observable])
        return self._rebuild_outdated(self.shared_keys())

    def shared_keys(self) -> list[AssetKey]:
        """The unpartitioned assets not built from a generator and not trained or evaluated
        (sources, seeds, SQL models, users)."""
        graph = self.graph
        from_generators = (AssetSelection.groups(SYNTHETIC_GROUP).downstream()
                           | AssetSelection.groups(TRAINING_GROUP, EVALUATION_GROUP).downstream()).resolve(graph)
        return [key for key in graph.materializable_asset_keys
                if not graph.get(key).is_partitioned and key not in from_generators]

    def stale_or_missing(self, key: AssetKey, partitions: list[str]) -> list[str]:
        view = AssetGraphView(
            temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
            instance=self.instance, asset_graph=self.graph,
        )
        resolver = CachingStaleStatusResolver(self.instance, self.graph, view)
        return [p for p in partitions if resolver.get_status(key, p) != StaleStatus.FRESH]

    def user_weeks(self, dataset: str, user: str) -> list[str]:
        return self.warehouse.query(
            f'SELECT DISTINCT week FROM "{dataset}".weekly_segments WHERE user_id = ? ORDER BY week', [user]
        )["week"].tolist()

    def synthetic_keys(self, dataset: str, generator: str | None) -> list[AssetKey]:
        """`DS/synthetic_GEN` of one generator, or of every generator the project's scope builds
        (declarations whose scope names no users, such as ablations or GPU-only ones, are left out)."""
        if generator is None:
            from bgen_assets.generators import load_generator_specs

            selection = self.project.selection(dataset)
            names = [spec.name for spec in load_generator_specs()
                     if spec.selection(self.project.scope, dataset, selection).users != []]
        else:
            names = [generator]
        keys = [AssetKey([dataset, f"synthetic_{name}"]) for name in names]
        return [key for key in keys if self.graph.has(key)]

    def materialize_segments(self, dataset: str, user: str) -> int:
        """The user's weekly segments partition, if stale or missing; returns 1 if it ran."""
        segments = AssetKey([dataset, "weekly_segments"])
        stale = self.stale_or_missing(segments, [user])
        if stale:
            self._materialize([segments], partition_key=user)
        return len(stale)

    def fit_generators(self, dataset: str, generator: str | None = None) -> list[AssetKey]:
        """The dataset's fitted generator models (`DS/NAME_model`) where stale or missing."""
        fitted = [parent for key in self.synthetic_keys(dataset, generator) for parent in self.graph.get(key).parent_keys
                  if self.graph.get(parent).group_name == SYNTHETIC_GROUP]
        return self._rebuild_outdated(fitted)

    def materialize_user(
        self, dataset: str, user: str, generator: str | None = None, max_weeks: int | None = None
    ) -> dict[str, int]:
        """One user's weekly segments and synthetic partitions (and the generators' fitted models),
        only where missing or stale.

        Returns how many partitions each asset materialised (0 everywhere = already up to date)."""
        if user not in self.instance.get_dynamic_partitions(users(dataset).name):
            raise RunFailed(f"unknown user {user!r} of dataset {dataset!r} (is {dataset}/raw_events materialised?)")
        targets = self.synthetic_keys(dataset, generator)
        upstream = {parent for key in targets for parent in self.graph.get(key).parent_keys
                    if not self.graph.get(parent).is_partitioned and self.graph.get(parent).group_name != SYNTHETIC_GROUP}
        upstream |= {AssetKey([dataset, name]) for name in ("event_splits", "profiles")}
        missing = sorted(key.to_user_string() for key in upstream if self.stale_or_missing(key, [None]))
        if missing:
            raise RunFailed(f"shared assets missing or stale: {', '.join(missing)}; build them first with `bgen build`")
        done = {key.to_user_string(): 1 for key in self.fit_generators(dataset, generator)}
        done[f"{dataset}/weekly_segments"] = self.materialize_segments(dataset, user)
        weeks = self.user_weeks(dataset, user)[:max_weeks]
        for key in targets:
            pending = self.stale_or_missing(key, [f"{user}|{week}" for week in weeks])
            if pending:
                self._materialize([key], tags={ASSET_PARTITION_RANGE_START_TAG: pending[0],
                                               ASSET_PARTITION_RANGE_END_TAG: pending[-1]})
            done[key.to_user_string()] = len(pending)
        return done

    def evaluate_generators(self, dataset: str, generators: list[str]) -> dict[str, tuple[bool, str]]:
        """Fidelity and privacy of each generator's synthetic table, where stale or missing; returns
        each generator's privacy-gate verdict (passed, reason). A failed gate is an outcome here,
        not an error: that generator is simply not trained on."""
        keys = [AssetKey([dataset, f"{table}_{generator}"]) for generator in generators for table in EVALUATION_TABLES]
        self._rebuild_outdated(keys, tolerated_checks=(GATE_CHECK,))
        return {generator: gate_verdict(self.warehouse, dataset, generator) for generator in generators}

    def train_experiments(self, dataset: str, experiments: list, usable: list[str]) -> list[AssetKey]:
        """The experiments' predictors on real data and with each usable generator, then the
        dataset's result tables and report, where stale or missing."""
        keys = [AssetKey([dataset, f"{spec.name}_real"]) for spec in experiments]
        for spec in experiments:
            keys += [AssetKey([dataset, name]) for generator in spec.generators if generator in usable
                     for name in (f"training_set_{generator}", f"{spec.name}_with_{generator}")]
        keys += [AssetKey([dataset, name]) for name in DATASET_SUMMARIES]
        return self._rebuild_outdated(list(dict.fromkeys(keys)))
