"""The Dagster code location: every asset, check and resource of the project."""

from __future__ import annotations

import warnings

from dagster import AssetKey, AssetsDefinition, BetaWarning, Definitions, definitions

from bgen_assets.assets.evaluation import EVALUATION_TABLES, evaluation_assets
from bgen_assets.assets.models import catalog_assets
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
    schema_names: dict[AssetKey, str] = {}  # table asset -> its entry in models/schema.yml
    for dataset in project.datasets:
        assets += raw_assets(project, dataset) + user_assets(project, dataset)
        generators = load_generator_specs(catalog.models_dir / "generators")
        for spec in generators:
            assets += generator_assets(project, catalog, dataset, spec)
            if spec.needs_fit:
                schema_names[AssetKey([dataset, f"{spec.name}_model"])] = f"{spec.kind}_model"
            schema_names[AssetKey([dataset, f"synthetic_{spec.name}"])] = "synthetic_events"
            assets += evaluation_assets(project, catalog, dataset, spec)
            schema_names.update({AssetKey([dataset, f"{table}_{spec.name}"]): table for table in EVALUATION_TABLES})
        experiments = load_experiment_specs(catalog.models_dir / "experiments")
        for spec in experiments:
            trained = experiment_assets(project, catalog, dataset, spec)
            assets += trained
            schema_names.update({key: "predictor_scores" for asset in trained for key in asset.keys})
        assets.append(utility_results_asset(project, catalog, dataset, experiments))
        schema_names[AssetKey([dataset, "utility_results"])] = "predictor_scores"
        assets.append(report_asset(project, dataset, generators))
        schema_names.update({AssetKey(model.relation.key_path): model.table_doc_name for model in catalog.models(dataset)})
    tables = [asset for asset in assets if isinstance(asset, AssetsDefinition)]  # not the observed source files
    for key in (key for asset in tables for key in asset.keys):
        schema, name = key.path
        schema_names.setdefault(key, f"seeds/{name}" if schema == "seeds" else name)
    upstream = {dep.asset_key for asset in tables for spec in asset.specs_by_key.values() for dep in spec.deps}
    leaves = set(schema_names) - upstream
    return Definitions(
        assets=assets,
        asset_checks=table_checks(catalog, schema_names, leaves),
        resources={"warehouse": Warehouse.for_project(project), "tracking": MlflowTracking.for_project(project.home)},
    )


@definitions
def defs() -> Definitions:
    """Built when Dagster loads the code location, not when a command imports this module."""
    return build_definitions(project())
