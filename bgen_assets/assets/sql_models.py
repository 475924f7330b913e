"""Assets built from the declarative catalogue: CSV seeds and SQL models run in DuckDB."""


import pandas as pd
import pandera.pandas as pa
from dagster import AssetsDefinition, DataVersion, MaterializeResult, MetadataValue, TableColumn, TableSchema, asset

from bgen_assets import names
from bgen_assets.catalog import Catalog, SqlModel
from bgen_assets.checks import schema_entry
from bgen_assets.code_versions import code_version
from bgen_assets.names import Relation
from bgen_assets.schemas import describe_failures, table_schema, validate
from bgen_assets.warehouse import Warehouse, table_exists, table_fingerprint

SEED_GROUP = "seeds"
MODEL_GROUP = "models"


def column_schema(catalog: Catalog, table: str) -> dict:
    columns = catalog.table_doc(table).get("columns", {})
    if not columns:
        return {}
    return {"dagster/column_schema": TableSchema(
        columns=[TableColumn(name, spec["type"], description=spec.get("doc")) for name, spec in columns.items()]
    )}


def declared_metadata(warehouse: Warehouse, relation: Relation, aggregates: dict[str, str]) -> dict:
    """The schema file's named SQL aggregates, evaluated over the built table."""
    if not aggregates:
        return {}
    select = ", ".join(f'{expression} AS "{name}"' for name, expression in aggregates.items())
    values = warehouse.query(f"SELECT {select} FROM {relation.sql}").to_dict("records")[0]
    return {name: (value.item() if hasattr(value, "item") else value) for name, value in values.items()}


class SchemaViolation(ValueError):
    """A built table fails its models/schema.yml entry; the table it would replace is kept."""


def missing_intent_hint(relation: Relation, errors: pa.errors.SchemaErrors) -> str:
    """What to declare when events come without an intent; empty for any other failure."""
    cases = errors.failure_cases
    if relation.name != "events" or not ((cases["column"] == "intent") & (cases["check"] == "not_nullable")).any():
        return ""
    return ("\nan event without an intent: declare the events source's intent column (`columns: intent:` in "
            f"bgen_project.yml), or derive one in models/{relation.schema}/events.sql (as models/ubiqlog/events.sql does)")


def source_lines(warehouse: Warehouse, dataset: str, built: pd.DataFrame, errors: pa.errors.SchemaErrors) -> str:
    """The raw file lines the failing rows of an event table come from (matched on user, time and
    location), for a message a user can act on; empty when they cannot be matched."""
    rows = errors.failure_cases["index"].dropna().astype(int).unique()[:20]
    if not {"user_id", "ts", "location"} <= set(built.columns) or not len(rows) \
            or not table_exists(warehouse, dataset, names.raw_events(dataset).name):
        return ""
    with warehouse.connect() as con:
        con.register("failing", built.iloc[rows][["user_id", "ts", "location"]])
        found = con.execute(f"SELECT DISTINCT r.source_file, r.source_row FROM {names.raw_events(dataset).sql} r "
                            "JOIN failing f USING (user_id, ts, location) ORDER BY 1, 2").df()
    lines = [f"{file} line {row}" for file, row in found.itertuples(index=False)][:10]
    return f"\nfrom the raw file(s): {', '.join(lines)}" if lines else ""


def seed_asset(catalog: Catalog, relation: Relation, path) -> AssetsDefinition:
    doc_name = f"seeds/{relation.name}"
    doc = catalog.table_doc(doc_name)

    @asset(
        key=relation.key,
        group_name=SEED_GROUP,
        description=doc.get("description", f"Seed {path.name}"),
        code_version=code_version(path, length=16),
        metadata={"path": MetadataValue.path(str(path)), **column_schema(catalog, doc_name), **schema_entry(doc_name)},
        kinds={"duckdb", "csv"},
    )
    def seed(warehouse: Warehouse) -> MaterializeResult:
        table = pd.read_csv(path, dtype=str, keep_default_na=False).replace({"": None})
        warehouse.replace_table(relation.schema, relation.name, table)
        rows, version = table_fingerprint(warehouse, relation.schema, relation.name)
        return MaterializeResult(data_version=DataVersion(version), metadata={"dagster/row_count": rows})

    return seed


def sql_asset(catalog: Catalog, model: SqlModel) -> AssetsDefinition:
    relation = model.relation
    doc = catalog.table_doc(model.table_doc_name)
    schema = table_schema(catalog, model.table_doc_name, catalog.kept_columns(relation.schema, model.table_doc_name))

    @asset(
        key=relation.key,
        deps=[ref.key for ref in model.refs],
        group_name=MODEL_GROUP,
        description=doc.get("description", f"SQL model {model.path.name}"),
        code_version=model.code_version,
        metadata={
            "sql": MetadataValue.md(f"```sql\n{model.sql}\n```"),
            "path": MetadataValue.path(str(model.path)),
            **column_schema(catalog, model.table_doc_name),
            **schema_entry(model.table_doc_name),
        },
        kinds={"duckdb", "sql"},
    )
    def sql_model(warehouse: Warehouse) -> MaterializeResult:
        # Built under a staging name, validated with the warehouse lock released, then swapped in:
        # a failing table never replaces the last good one, and no check runs while holding the lock.
        staging = f'"{relation.schema}"."{relation.name}__building"'
        with warehouse.connect() as con:
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{relation.schema}"')
            con.execute(f"CREATE OR REPLACE TABLE {staging} AS {model.sql}")
        if schema is not None:
            built = warehouse.query(f"SELECT * FROM {staging}")
            try:
                validate(schema, built)
            except pa.errors.SchemaErrors as errors:
                with warehouse.connect() as con:
                    con.execute(f"DROP TABLE {staging}")
                details = (describe_failures(errors) + source_lines(warehouse, relation.schema, built, errors)
                           + missing_intent_hint(relation, errors))
                raise SchemaViolation(f"{relation.sql} fails its schema in models/schema.yml, so the table "
                                      f"built before is kept:\n{details}") from None
        with warehouse.connect() as con:
            con.execute("BEGIN")
            con.execute(f"CREATE OR REPLACE TABLE {relation.sql} AS SELECT * FROM {staging}")
            con.execute(f"DROP TABLE {staging}")
            con.execute("COMMIT")
        rows, version = table_fingerprint(warehouse, relation.schema, relation.name)
        return MaterializeResult(
            data_version=DataVersion(version),
            metadata={"dagster/row_count": rows, **declared_metadata(warehouse, relation, doc.get("metadata", {}))},
        )

    return sql_model


def catalog_assets(catalog: Catalog) -> list[AssetsDefinition]:
    seeds = [seed_asset(catalog, relation, path) for relation, path in catalog.seeds]
    models = [sql_asset(catalog, model) for dataset in catalog.project.datasets for model in catalog.models(dataset)]
    return seeds + models
