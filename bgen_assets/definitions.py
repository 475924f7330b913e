"""The Dagster code location: every asset, check and resource of the project."""

from __future__ import annotations

import warnings

from dagster import AssetsDefinition, BetaWarning, Definitions, definitions

from bgen_assets.assets.evaluation import evaluation_assets
from bgen_assets.assets.sql_models import catalog_assets
from bgen_assets.assets.raw import raw_assets
from bgen_assets.assets.report import report_asset
from bgen_assets.assets.synthetic import generator_assets
from bgen_assets.assets.training import experiment_assets, utility_results_asset
from bgen_assets.assets.users import user_assets
from bgen_assets.catalog import Catalog
from bgen_assets.checks import table_checks
from bgen_assets.config import Project, project
from bgen_assets.experiments import load_experiment_specs
from bgen_assets.generators import load_generator_specs
from bgen_assets.tracking import MlflowTracking
from bgen_assets.warehouse import Warehouse


warnings.filterwarnings("ignore", category=BetaWarning)  # partition mappings and backfill policies we rely on


def build_definitions(project: Project, catalog: Catalog | None = None) -> Definitions:
    catalog = catalog or Catalog(project)
    assets = catalog_assets(catalog)
    generators = load_generator_specs(catalog.models_dir / "generators")
    experiments = load_experiment_specs(catalog.models_dir / "experiments")
    for dataset in project.datasets:
        assets += raw_assets(project, dataset) + user_assets(project, dataset)
        for spec in generators:
            assets += generator_assets(project, catalog, dataset, spec) + evaluation_assets(project, catalog, dataset, spec)
        for spec in experiments:
            assets += experiment_assets(project, catalog, dataset, spec)
        assets += [utility_results_asset(project, catalog, dataset, experiments), report_asset(project, dataset, generators)]
    tables = [asset for asset in assets if isinstance(asset, AssetsDefinition)]  # not the observed source files
    executor = None  # Dagster's default
    if project.dagster.executor == "celery":
        from bgen_assets.cluster import celery_executor_from_environment

        executor = celery_executor_from_environment()
    return Definitions(
        assets=assets,
        asset_checks=table_checks(catalog, tables),
        resources={"warehouse": Warehouse.for_project(project), "tracking": MlflowTracking.for_project(project.home)},
        executor=executor,
    )


@definitions
def defs() -> Definitions:
    """Built when Dagster loads the code location, not when a command imports this module."""
    return build_definitions(project())
