"""One Pandera asset check per warehouse table, built from models/schema.yml.

Checks on tables that others are built from are blocking: a failure stops the run
before anything downstream is written."""


import pandera.pandas as pa
from dagster import AssetCheckResult, AssetCheckSeverity, AssetChecksDefinition, AssetKey, AssetsDefinition, asset_check

from bgen_assets.catalog import Catalog
from bgen_assets.schemas import describe_failures, table_schema, validate
from bgen_assets.warehouse import Warehouse

SCHEMA_ENTRY = "bgen/schema"


def schema_entry(name: str) -> dict:
    """Asset metadata naming the table's entry in models/schema.yml (generic, e.g. `synthetic_events`),
    which its Pandera check validates against."""
    return {SCHEMA_ENTRY: name}


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


def table_checks(catalog: Catalog, assets: list[AssetsDefinition]) -> list[AssetChecksDefinition]:
    """A check for every table asset whose schema entry (`schema_entry`) models/schema.yml declares;
    blocking where another asset is built from the table."""
    specs = [spec for asset in assets for spec in asset.specs_by_key.values()]
    upstream = {dep.asset_key for spec in specs for dep in spec.deps}
    return [
        schema_check(catalog, spec.key, spec.metadata[SCHEMA_ENTRY], blocking=spec.key in upstream)
        for spec in specs
        if SCHEMA_ENTRY in spec.metadata and table_schema(catalog, spec.metadata[SCHEMA_ENTRY]) is not None
    ]
