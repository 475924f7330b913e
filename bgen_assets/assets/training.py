"""Predictors trained per experiment declaration (`models/experiments/NAME.yml`) and dataset:

  DS/NAME_real        the real-only population model, and per individual user fine-tunes on
                      the real train part and on the first `limited_records` events
  DS/NAME_with_GEN    for each declared generator: pretraining on real + GEN's synthetic weeks,
                      per-user fine-tunes on GEN only (replacement) and on limited + GEN
                      (augmentation), from `DS/training_set_GEN` (built only past the privacy gate)
  DS/utility_results  the paper-style tables of every experiment (bgen_assets/results.py)

Every training is an MLflow run (per-user fine-tunes are child runs of the population run),
tagged with the data versions of what it was trained on. Scores: the real test events of the
individual users in the project's scope (bgen_assets/experiments.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from dagster import AssetDep, AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, asset

from bgen_assets import names, results
from bgen_assets.catalog import Catalog
from bgen_assets.checks import schema_entry
from bgen_assets.code_versions import code_version
from bgen_assets.config import Project
from bgen_assets.quality.gate import gate_verdict
from bgen_assets.experiments import (
    ExperimentSpec,
    Scorer,
    fine_tune,
    pretraining_frames,
    scenario_training_data,
    score_rows,
    with_synthetic,
)
from bgen_assets.results import TABLES, interval_legend, markdown, tracked_figures, utility_tables
from bgen_assets.schemas import table_schema, validate
from bgen_assets.tracking import MlflowTracking, TrainingRun
from bgen_assets.warehouse import Warehouse, frame_fingerprint, table_exists, table_fingerprint

if TYPE_CHECKING:  # torch loads when something trains, not with the graph
    from bgen_assets.predictors.core import TrainedPredictor

TRAINING_GROUP = "training"


class ExperimentData:
    """The real events an experiment reads, and its fixed scorer, for one dataset and scope."""

    def __init__(self, project: Project, dataset: str, spec: ExperimentSpec, warehouse: Warehouse):
        from bgen_assets.predictors import metrics

        splits = names.sql_model(dataset, "event_splits")
        self.splits = warehouse.query(f"SELECT * FROM {splits.sql} ORDER BY user_id, ts")
        self.intents = sorted(self.splits["intent"].unique())
        chosen = project.selection(dataset).users
        individual = self.splits[self.splits["role"] == "individual"]
        if chosen is not None:
            individual = individual[individual["user_id"].isin(chosen)]
        self.individual = individual
        self.population = self.splits[self.splits["part"] == "pretrain"]
        anchors = metrics.anchor_intents(self.population["intent"].value_counts(), spec.anchor_share)
        self.scorer = Scorer(individual, anchors)
        self.lineage = {splits.key.to_user_string(): table_fingerprint(warehouse, splits.schema, splits.name)[1]}


def model_directory(project: Project, dataset: str, experiment: str) -> Path:
    """`DS/EXPERIMENT_real`'s models: per training seed `seed_S/population/` and `seed_S/limited/USER/`."""
    return project.home / "predictors" / dataset / experiment / "real"


RealModels = dict[int, tuple["TrainedPredictor", dict[str, "TrainedPredictor"]]]  # seed -> (population, limited per user)


def save_seed_models(models: tuple[TrainedPredictor, dict[str, TrainedPredictor]], folder: Path) -> None:
    """One seed's population model and its users' limited-data models (a user keeping the
    population model is not saved again)."""
    population, limited = models
    population.save(folder / "population")
    for user, model in limited.items():
        if model is not population:
            model.save(folder / "limited" / user)


def load_seed_models(folder: Path) -> tuple[TrainedPredictor, dict[str, TrainedPredictor]]:
    from bgen_assets.predictors.core import TrainedPredictor

    return (TrainedPredictor.load(folder / "population"),
            {path.name: TrainedPredictor.load(path) for path in sorted((folder / "limited").glob("*"))})


def save_real_models(models: RealModels, directory: Path) -> None:
    """Replace the saved models as a whole: readers never see half of them."""
    staging = directory.with_name(directory.name + ".incoming")
    shutil.rmtree(staging, ignore_errors=True)
    for seed, seed_models in models.items():
        save_seed_models(seed_models, staging / f"seed_{seed}")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def load_real_models(directory: Path) -> RealModels:
    return {int(folder.name.removeprefix("seed_")): load_seed_models(folder) for folder in sorted(directory.glob("seed_*"))}


class FinishedSeeds:
    """The seeds a training asset has finished, kept on disk until its table is written: a run
    stopped between seeds (each takes minutes at full scale) resumes at the first unfinished one.
    Kept under a hash of everything a seed's results depend on (declaration, scope, input data
    versions), so a seed trained on other inputs is never read."""

    def __init__(self, directory: Path, *key: str):
        self.root = directory
        self.directory = directory / code_version(*key)

    def folder(self, seed: int) -> Path:
        return self.directory / f"seed_{seed}"

    def rows(self, seed: int) -> pd.DataFrame | None:
        path = self.folder(seed) / "scores.parquet"
        return pd.read_parquet(path) if path.exists() else None

    def keep(self, seed: int, rows: pd.DataFrame, models: tuple | None = None) -> None:
        """A finished seed's score rows (and models), written whole: a staging folder renamed into place."""
        staging = self.directory / f"seed_{seed}.incoming"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if models is not None:
            save_seed_models(models, staging)
        rows.to_parquet(staging / "scores.parquet", index=False)
        staging.rename(self.folder(seed))

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def finished_seeds(project: Project, dataset: str, experiment: str, asset: str, *key: str) -> FinishedSeeds:
    return FinishedSeeds(project.home / "predictors" / dataset / experiment / f"{asset}.unfinished", *key)


def per_user_scores(spec: ExperimentSpec, data: ExperimentData, config, population: TrainedPredictor,
                    scenario: str, generator: str, synthetic: pd.DataFrame | None, parent: TrainingRun,
                    fallback: dict[str, TrainedPredictor] | None = None
                    ) -> tuple[pd.DataFrame, dict[str, TrainedPredictor]]:
    """Fine-tune one model per individual user for `scenario` (child runs of `parent`), score them.
    A user with nothing to train on keeps `fallback[user]` (default: the population model)."""
    models: dict[str, TrainedPredictor] = {}
    with_data = 0
    for user, events in data.individual.groupby("user_id", sort=True):
        own = synthetic[synthetic["user_id"] == user] if synthetic is not None else None
        sources, valid = scenario_training_data(scenario, events, own)
        if not any(len(population.windows(frame)) for frame in sources.values()):  # nothing, or too short
            models[user] = (fallback or {}).get(user, population)
            continue
        with_data += 1
        with parent.child(f"user {user}: {scenario} fine-tune on {generator}", config=config,
                          params={"scenario": scenario, "generator": generator, "user_id": user,
                                  **{f"{name}_events": len(frame) for name, frame in sources.items()}}) as run:
            models[user] = fine_tune(spec, config, population, sources, valid, data.scorer.anchors, run.log_epoch)
            run.log_metrics(data.scorer.score({user: models[user]})[0])
            run.log_model(models[user])
    pooled, per_user = data.scorer.score(models)
    parent.log_metrics(pooled, prefix=f"{scenario}.")
    rows = score_rows(pooled, per_user, experiment=spec.name, generator=generator, scenario=scenario, seed=config.seed)
    return rows.assign(users_with_data=with_data, mlflow_run_id=parent.run_id), models


def pretrain(spec: ExperimentSpec, data: ExperimentData, config, scope_users: int | None, generator: str,
             synthetic: pd.DataFrame | None, run: TrainingRun) -> tuple[TrainedPredictor, pd.DataFrame]:
    """The population model (on real, or real + `generator`'s synthetic weeks as the declaration's
    `synthetic` says), scored on the test events."""
    from bgen_assets.predictors.core import fit

    train, valid = pretraining_frames(data.population, scope_users, config.seed)
    sources = {"real": train}
    if synthetic is not None:
        sources["synthetic"] = synthetic[synthetic["use"] == "pretrain"].assign(target=True)
    sources = {name: frame for name, frame in sources.items() if len(frame)}
    predictor = with_synthetic(spec.synthetic, sources, None, lambda chosen, init, source_weights: fit(
        config, chosen, valid, init=init, intents=data.intents, on_epoch=run.log_epoch, source_weights=source_weights))
    pooled, per_user = data.scorer.score(predictor)
    run.log_metrics(pooled, prefix="pretraining.")
    run.log_model(predictor)
    rows = score_rows(pooled, per_user, experiment=spec.name, generator=generator, scenario="pretraining",
                      seed=config.seed)
    users_with_synthetic = sources["synthetic"]["user_id"].nunique() if "synthetic" in sources else 0
    return predictor, rows.assign(users_with_data=users_with_synthetic, mlflow_run_id=run.run_id)


def scores_result(warehouse: Warehouse, schema, relation: names.Relation, rows: list[pd.DataFrame],
                  tracking: MlflowTracking, dataset: str, extra: dict) -> MaterializeResult:
    """Write the score rows of every seed; metadata: the pooled figures' mean over seeds, and the
    seeds' MLflow runs (one per seed, some perhaps from an interrupted earlier run)."""
    scores = validate(schema, pd.concat(rows, ignore_index=True)[list(schema.columns)])
    warehouse.replace_table(relation.schema, relation.name, scores)
    pooled = scores[scores["user_id"] == "all"].groupby("scenario")[["precision", "recall", "ndcg@5"]].mean()
    run_ids = list(dict.fromkeys(scores["mlflow_run_id"]))
    return MaterializeResult(
        data_version=DataVersion(frame_fingerprint(scores)),
        metadata={"dagster/row_count": len(scores), "seeds": scores["seed"].nunique(),
                  "mlflow_run_ids": run_ids, "mlflow_run": MetadataValue.url(tracking.run_url(dataset, run_ids[0])),
                  **{f"{scenario}_{metric}": round(float(pooled.loc[scenario, metric]), 4)
                     for scenario in pooled.index for metric in pooled.columns}, **extra},
    )


def scores_code_version(spec: ExperimentSpec, project: Project, schema) -> str:
    """The declaration, the scope and the score table's columns: a table of an older layout is rebuilt.
    An unset `real_from` is left out, so that declarations from before it keep their code version."""
    declaration = spec.model_dump_json(exclude={"real_from"} if spec.real_from is None else set())
    return code_version(declaration, project.scope, ",".join(schema.columns))


def real_asset(project: Project, catalog: Catalog, dataset: str, spec: ExperimentSpec) -> AssetsDefinition:
    schema = table_schema(catalog, "predictor_scores")
    scope = spec.scoped(project.scope)
    relation = names.experiment_real(dataset, spec.name)
    version = scores_code_version(spec, project, schema)

    @asset(
        key=relation.key,
        deps=[names.sql_model(dataset, "event_splits").key],
        group_name=TRAINING_GROUP,
        description=f"Experiment `{spec.name}` ({spec.backbone}, individual stage {spec.individual_stage}) on real "
        f"data only: the population model, and per-user fine-tunes on real and on limited real events. {spec.description}",
        code_version=version,
        metadata=schema_entry("predictor_scores"),
        kinds={"pytorch", "mlflow"},
    )
    def real(warehouse: Warehouse, tracking: MlflowTracking) -> MaterializeResult:
        data = ExperimentData(project, dataset, spec, warehouse)
        finished = finished_seeds(project, dataset, spec.name, "real", version,
                                  json.dumps(data.lineage, sort_keys=True))
        rows, models = [], {}
        for pretrain_config, finetune_config in spec.seeded_configs(project.scope):
            seed = pretrain_config.seed
            kept = finished.rows(seed)
            if kept is not None:
                rows.append(kept)
                models[seed] = load_seed_models(finished.folder(seed))
                continue
            with tracking.training_run(dataset, f"{spec.name}: pretrain on real, seed {seed}", config=pretrain_config,
                                       params={"experiment": spec.name, "pretrain_users": scope.max_pretrain_users or "all"},
                                       lineage=data.lineage) as run:
                population, pretrained = pretrain(spec, data, pretrain_config, scope.max_pretrain_users, "real", None, run)
                finetuned, _ = per_user_scores(spec, data, finetune_config, population, "finetune", "real", None, run)
                limited, limited_models = per_user_scores(spec, data, finetune_config, population, "limited", "real",
                                                          None, run)
            models[seed] = (population, limited_models)
            rows.append(pd.concat([pretrained, finetuned, limited], ignore_index=True))
            finished.keep(seed, rows[-1], models[seed])
        save_real_models(models, model_directory(project, dataset, spec.name))
        result = scores_result(warehouse, schema, relation, rows, tracking, dataset,
                               {"pretrain_epochs": [len(population.history) for population, _ in models.values()],
                                "pretrain_stopped_early": [population.stopped_early for population, _ in models.values()]})
        finished.clear()
        return result

    return real


def with_generator_asset(project: Project, catalog: Catalog, dataset: str, spec: ExperimentSpec,
                         generator: str) -> AssetsDefinition:
    schema = table_schema(catalog, "predictor_scores")
    scope = spec.scoped(project.scope)
    training_set = names.training_set(dataset, generator)
    relation = names.experiment_with(dataset, spec.name, generator)
    version = scores_code_version(spec, project, schema)

    @asset(
        key=relation.key,
        deps=[AssetDep(names.experiment_real(dataset, spec.real_name).key), AssetDep(training_set.key)],
        group_name=TRAINING_GROUP,
        description=f"Experiment `{spec.name}` with generator `{generator}`: pretraining augmentation, fine-tuning "
        "replacement and fine-tuning augmentation, from its privacy-gated training set.",
        code_version=version,
        metadata=schema_entry("predictor_scores"),
        kinds={"pytorch", "mlflow"},
    )
    def with_generator(warehouse: Warehouse, tracking: MlflowTracking) -> MaterializeResult:
        passed, reason = gate_verdict(warehouse, dataset, generator)
        if not passed:
            raise RuntimeError(f"{names.synthetic(dataset, generator).key.to_user_string()} may not be trained on: {reason}")
        data = ExperimentData(project, dataset, spec, warehouse)
        synthetic = warehouse.query(f"SELECT * FROM {training_set.sql} ORDER BY user_id, ts")
        lineage = {**data.lineage, training_set.key.to_user_string():
                   table_fingerprint(warehouse, training_set.schema, training_set.name)[1]}
        real_models = load_real_models(model_directory(project, dataset, spec.real_name))
        real_table = names.experiment_real(dataset, spec.real_name)
        finished = finished_seeds(project, dataset, spec.name, f"with_{generator}",
                                  version, json.dumps(lineage, sort_keys=True),
                                  table_fingerprint(warehouse, real_table.schema, real_table.name)[1])
        rows = []
        for pretrain_config, finetune_config in spec.seeded_configs(project.scope):
            seed = pretrain_config.seed
            kept = finished.rows(seed)
            if kept is not None:
                rows.append(kept)
                continue
            population, limited_models = real_models[seed]
            with tracking.training_run(dataset, f"{spec.name}: pretrain on real + {generator}, seed {seed}",
                                       config=pretrain_config,
                                       params={"experiment": spec.name, "generator": generator,
                                               "pretrain_users": scope.max_pretrain_users or "all",
                                               "synthetic_events": len(synthetic), "synthetic_weight": spec.synthetic.weight,
                                               "synthetic_schedule": spec.synthetic.schedule}, lineage=lineage) as run:
                _, augmented = pretrain(spec, data, pretrain_config, scope.max_pretrain_users, generator, synthetic, run)
                replaced, _ = per_user_scores(spec, data, finetune_config, population, "replacement", generator,
                                              synthetic, run)
                augmentation, _ = per_user_scores(spec, data, finetune_config, population, "augmentation", generator,
                                                  synthetic, run, fallback=limited_models)
            rows.append(pd.concat([augmented, replaced, augmentation], ignore_index=True))
            finished.keep(seed, rows[-1])
        result = scores_result(warehouse, schema, relation, rows, tracking, dataset, {"synthetic_events": len(synthetic)})
        finished.clear()
        return result

    return with_generator


def experiment_assets(project: Project, catalog: Catalog, dataset: str, spec: ExperimentSpec) -> list[AssetsDefinition]:
    """The experiment's real-data predictors (unless it shares another's: `real_from`) and one
    asset per generator."""
    real = [real_asset(project, catalog, dataset, spec)] if spec.real_from is None else []
    return real + [with_generator_asset(project, catalog, dataset, spec, generator) for generator in spec.generators]


def with_shared_real_rows(scores: pd.DataFrame, specs: list[ExperimentSpec]) -> pd.DataFrame:
    """The score rows, plus for each experiment that shares another's real-data predictors those
    predictors' rows under its own name (its tables compare against them), once it has rows of its own."""
    built = set(scores["experiment"])
    shared = [scores[(scores["experiment"] == spec.real_from) & (scores["generator"] == "real")].assign(experiment=spec.name)
              for spec in specs if spec.real_from is not None and spec.name in built]
    return pd.concat([scores, *shared], ignore_index=True) if shared else scores


def utility_results_asset(project: Project, catalog: Catalog, dataset: str, specs: list[ExperimentSpec]) -> AssetsDefinition:
    score_tables = [names.experiment_real(dataset, spec.name) for spec in specs if spec.real_from is None] + [
        names.experiment_with(dataset, spec.name, generator) for spec in specs for generator in spec.generators]
    relation = names.utility_results(dataset)

    @asset(
        key=relation.key,
        deps=[table.key for table in score_tables],
        group_name=TRAINING_GROUP,
        description="The paper's Tables 1-3 (pretraining augmentation, fine-tuning replacement, fine-tuning "
        "augmentation) over every experiment built so far, as Markdown metadata and CSV files under "
        "STATE/reports/DS/; the table holds all pooled and per-user scores.",
        code_version=code_version(results),  # the tables' code
        metadata=schema_entry("predictor_scores"),
        kinds={"duckdb", "python"},
    )
    def utility_results(warehouse: Warehouse, tracking: MlflowTracking) -> MaterializeResult:
        built = [table for table in score_tables if table_exists(warehouse, table.schema, table.name)]
        scores = with_shared_real_rows(pd.concat([warehouse.query(f"SELECT * FROM {table.sql}") for table in built],
                                                 ignore_index=True), specs) \
            if built else pd.DataFrame(columns=list(table_schema(catalog, "predictor_scores").columns))
        warehouse.replace_table(relation.schema, relation.name, scores)
        folder = project.home / "reports" / dataset
        folder.mkdir(parents=True, exist_ok=True)
        metadata = {"dagster/row_count": len(scores), "experiments_built": [table.name for table in built]}
        tables = utility_tables(scores)
        for name, table in tables.items():
            table.to_csv(folder / f"{name}.csv", index=False)
            metadata[name] = MetadataValue.md(f"### {TABLES[name]}\n\n{markdown(table)}\n\n{interval_legend()}")
        with tracking.training_run(dataset, "utility tables", params={"experiments": ",".join(t.name for t in built)},
                                   lineage={table.key.to_user_string(): table_fingerprint(warehouse, table.schema,
                                                                                          table.name)[1]
                                            for table in built}) as run:
            run.log_metrics(tracked_figures(tables))
        metadata["mlflow_run"] = MetadataValue.url(run.url)
        return MaterializeResult(data_version=DataVersion(frame_fingerprint(scores)), metadata=metadata)

    return utility_results
