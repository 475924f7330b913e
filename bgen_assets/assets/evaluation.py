"""Evaluation of every synthetic table, per dataset and generator: `DS/fidelity_NAME` and
`DS/privacy_NAME`, unpartitioned, built from all materialised partitions of `DS/synthetic_NAME`
(every row the table holds). `DS/privacy_NAME` carries the check `privacy_gate` (thresholds under
`privacy_gate:` in bgen_project.yml) and stores its verdict (`gate_passed`, `gate_reason`).

A failed gate is an outcome of the evaluation, not a failure of its run: the check fails (ERROR)
and the run succeeds. What keeps the data out of training is the stored verdict: the training set
refuses to build from it (models/per_generator/training_set.sql), predictors refuse it
(`bgen_assets.quality.gate.gate_verdict`), and commands train only on generators that passed."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from bgen_assets import names
from bgen_assets.catalog import Catalog
from bgen_assets.checks import schema_entry
from bgen_assets.code_versions import code_version
from bgen_assets.config import Project
from bgen_assets.quality import gate
from bgen_assets.generators import GeneratorSpec
from bgen_assets.schemas import table_schema, validate
from bgen_assets.names import Relation
from bgen_assets.warehouse import Warehouse, frame_fingerprint, table_exists

EVALUATION_GROUP = "evaluation"
# Read for the code version; imported (scipy, matplotlib) only when an evaluation runs.
EVALUATION_MODULES = tuple(f"bgen_assets.quality.{name}" for name in ("fidelity", "privacy", "gate", "plots"))
GATE_CHECK = "privacy_gate"


def evaluation_code_version(*settings: str) -> str:
    """A hash of the evaluation code and the settings that decide the tables."""
    return code_version(*settings, *(Path(find_spec(module).origin) for module in EVALUATION_MODULES), Path(__file__))


def read_table(warehouse: Warehouse, relation: Relation, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """The whole table, or an empty frame of its schema while no partition has been written."""
    if not table_exists(warehouse, relation.schema, relation.name):
        return validate(schema, pd.DataFrame(columns=list(schema.columns)))
    return warehouse.query(f"SELECT * FROM {relation.sql}")


def rounded(values: dict) -> dict:
    """Metadata values: floats rounded, NaN as None."""
    return {key: None if pd.isna(value) else round(float(value), 4) if isinstance(value, float) else value
            for key, value in values.items()}


def image_metadata(data: bytes, path: Path, title: str) -> dict:
    from bgen_assets.quality import plots

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {title: MetadataValue.md(plots.markdown_image(data, title)), f"{title}_png": MetadataValue.path(str(path))}


def evaluation_deps(dataset: str, spec: GeneratorSpec) -> list[AssetDep]:
    return [AssetDep(names.synthetic(dataset, spec.name).key, partition_mapping=AllPartitionMapping()),
            AssetDep(names.sql_model(dataset, "events").key), AssetDep(names.user_split(dataset).key)]


def real_events_sql(dataset: str) -> str:
    """The dataset's real events with each user's role (population or individual)."""
    return (f"SELECT e.*, s.role FROM {names.sql_model(dataset, 'events').sql} e "
            f"JOIN {names.user_split(dataset).sql} s USING (user_id)")


def fidelity_asset(project: Project, catalog: Catalog, dataset: str, spec: GeneratorSpec) -> AssetsDefinition:
    schema = table_schema(catalog, "fidelity")
    synthetic_schema, log_schema = table_schema(catalog, "synthetic_events"), table_schema(catalog, "generation_log")
    relation = names.fidelity(dataset, spec.name)

    @asset(
        key=relation.key,
        deps=evaluation_deps(dataset, spec),
        group_name=EVALUATION_GROUP,
        description=f"Fidelity of `{dataset}/synthetic_{spec.name}` to the real weeks it stands in for (KS p-values, "
        "BLEU, Bhattacharyya distance, Jensen-Shannon divergence, Pass@1): all generated users, and each user.",
        code_version=evaluation_code_version(str(project.slot_minutes)),
        metadata=schema_entry("fidelity"),
        kinds={"duckdb", "python"},
    )
    def fidelity_table(warehouse: Warehouse) -> MaterializeResult:
        from bgen_assets.quality import fidelity, plots

        real = warehouse.query(real_events_sql(dataset))
        synthetic = read_table(warehouse, names.synthetic(dataset, spec.name), synthetic_schema)
        log = read_table(warehouse, names.synthetic_log(dataset, spec.name), log_schema)
        table = fidelity.fidelity_table(real, synthetic, log, spec.name, project.slot_minutes)
        roles = real.drop_duplicates("user_id").set_index("user_id")["role"]
        table.insert(3, "role", table["user_id"].map(roles).fillna(""))
        table = validate(schema, table)
        warehouse.replace_table(dataset, relation.name, table)
        summary = table[table["level"] == "all"].iloc[0]
        metadata = {"dagster/row_count": len(table), **rounded(summary[fidelity.METRICS].to_dict())}
        users = table[table["level"] == "user"].sort_values("synthetic_weeks", ascending=False)
        if len(synthetic) and len(users):
            user = users["user_id"].iloc[0]  # the case study: the user with most synthetic weeks
            figure = plots.intent_distribution_figure(
                real.loc[real["user_id"] == user, "intent"], real.loc[real["role"] == "population", "intent"],
                synthetic.loc[synthetic["user_id"] == user, "intent"], user, spec.name)
            metadata |= image_metadata(plots.png(figure), project.home / "plots" / dataset / f"{relation.name}_intents.png",
                                       "intent_distribution")
        return MaterializeResult(data_version=DataVersion(frame_fingerprint(table)), metadata=metadata)

    return fidelity_table


def privacy_asset(project: Project, catalog: Catalog, dataset: str, spec: GeneratorSpec) -> AssetsDefinition:
    schema = table_schema(catalog, "privacy")
    synthetic_schema = table_schema(catalog, "synthetic_events")
    relation = names.privacy(dataset, spec.name)
    thresholds = project.privacy_gate

    @asset(
        key=relation.key,
        deps=evaluation_deps(dataset, spec),
        group_name=EVALUATION_GROUP,
        description=f"Privacy of `{dataset}/synthetic_{spec.name}`: overlap of each synthetic week with its most "
        "similar real weeks, membership-inference accuracy, per-user epsilon estimate, and the privacy gate's verdict.",
        code_version=evaluation_code_version(str(project.slot_minutes), thresholds.model_dump_json()),
        metadata=schema_entry("privacy"),
        check_specs=[AssetCheckSpec(GATE_CHECK, asset=relation.key,
                                    description="Fails for a synthetic table that leaks real weeks (thresholds under "
                                    "`privacy_gate:` in bgen_project.yml); its training set then refuses to build, "
                                    "so nothing trains on it. Not blocking: a stopped generator is an outcome, not a "
                                    "failed run.")],
        kinds={"duckdb", "python"},
    )
    def privacy_table(warehouse: Warehouse):
        from bgen_assets.quality import plots, privacy

        real = warehouse.query(f"SELECT * FROM {names.sql_model(dataset, 'events').sql}")
        synthetic = read_table(warehouse, names.synthetic(dataset, spec.name), synthetic_schema)
        table, weeks = privacy.privacy_table(real, [synthetic], spec.name, project.slot_minutes, thresholds.overlap, spec.seed)
        summary = table[table["level"] == "all"].iloc[0].to_dict()
        passed, reason = gate.judge(summary, thresholds)
        table = validate(schema, table.assign(gate_passed=passed, gate_reason=reason,
                                              synthetic_fingerprint=gate.synthetic_fingerprint(warehouse, dataset, spec.name)))
        warehouse.replace_table(dataset, relation.name, table)
        measured = rounded({key: summary[key] for key in privacy.PRIVACY_COLUMNS[3:]})
        metadata = {"dagster/row_count": len(table), "gate_passed": passed, "gate_reason": reason, **measured}
        if len(weeks):
            figure = plots.overlap_histogram_figure(weeks["top1_overlap"], spec.name, thresholds.overlap)
            metadata |= image_metadata(plots.png(figure), project.home / "plots" / dataset / f"{relation.name}_overlap.png",
                                       "overlap_distribution")
        yield MaterializeResult(data_version=DataVersion(frame_fingerprint(table)), metadata=metadata)
        yield AssetCheckResult(check_name=GATE_CHECK, passed=passed, severity=AssetCheckSeverity.ERROR,
                               description=reason, metadata=measured)

    return privacy_table


def evaluation_assets(project: Project, catalog: Catalog, dataset: str, spec: GeneratorSpec) -> list[AssetsDefinition]:
    return [fidelity_asset(project, catalog, dataset, spec), privacy_asset(project, catalog, dataset, spec)]
