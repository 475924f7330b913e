"""One Pandera asset check per warehouse table, built from models/schema.yml.

Checks on tables that others are built from are blocking: a failure stops the run
before anything downstream is written."""


import pandera.pandas as pa
from dagster import AssetCheckResult, AssetCheckSeverity, AssetChecksDefinition, AssetKey, asset_check

from bgen_assets.catalog import Catalog
from bgen_assets.schemas import describe_failures, table_schema, validate
from bgen_assets.warehouse import Warehouse


def schema_check(catalog: Catalog, key: AssetKey, schema_name: str, blocking: bool) -> AssetChecksDefinition:
    schema_sql, table = key.path
    schema = table_schema(catalog, schema_name, catalog.kept_columns(schema_sql, schema_name))

    @asset_check(
        asset=key,
        name="pandera_schema",
        blocking=blocking,
        description=f"Pandera schema `{schema_name}` from models/schema.yml"
        + (" (blocking: downstream assets are not built from a failing table)" if blocking else ""),
    )
    def check(warehouse: Warehouse) -> AssetCheckResult:
        frame = warehouse.query(f'SELECT * FROM "{schema_sql}"."{table}"')
        try:
            validate(schema, frame)
        except pa.errors.SchemaErrors as errors:
            return AssetCheckResult(
                passed=False, severity=AssetCheckSeverity.ERROR,
                description=describe_failures(errors), metadata={"rows": len(frame)},
            )
        return AssetCheckResult(passed=True, metadata={"rows": len(frame)})

    return check


def table_checks(catalog: Catalog, schema_names: dict[AssetKey, str], leaves: set[AssetKey]) -> list[AssetChecksDefinition]:
    """A check for every table whose schema (`schema_names[key]`) models/schema.yml declares."""
    return [
        schema_check(catalog, key, name, blocking=key not in leaves)
        for key, name in schema_names.items()
        if table_schema(catalog, name) is not None
    ]
