"""One Pandera asset check per warehouse table, built from models/schema.yml.

Checks on tables that others are built from are blocking: a failure stops the run
before anything downstream is written."""


import pandera.pandas as pa
from dagster import AssetCheckResult, AssetCheckSeverity, AssetChecksDefinition, AssetKey, asset_check

from bgen_assets.catalog import Catalog
from bgen_assets.schemas import describe_failures, table_schema, validate
from bgen_assets.warehouse import DUCKDB_POOL, Warehouse


def schema_check(catalog: Catalog, key: AssetKey, schema_name: str, blocking: bool) -> AssetChecksDefinition:
    schema = table_schema(catalog, schema_name)
    schema_sql, table = key.path

    @asset_check(
        asset=key,
        name="pandera_schema",
        blocking=blocking,
        pool=DUCKDB_POOL,
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


def schema_name_of(key: AssetKey) -> str:
    schema, table = key.path
    if schema == "seeds":
        return f"seeds/{table}"
    return "synthetic_events" if table.startswith("synthetic_") else table


def table_checks(catalog: Catalog, keys: list[AssetKey], leaves: set[AssetKey]) -> list[AssetChecksDefinition]:
    checks = []
    for key in keys:
        name = schema_name_of(key)
        if table_schema(catalog, name) is not None:
            checks.append(schema_check(catalog, key, name, blocking=key not in leaves))
    return checks
