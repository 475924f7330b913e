"""Pandera schemas built from `models/schema.yml`, so one file documents and checks every table."""

from __future__ import annotations

from functools import cache

import pandas as pd
import pandera.pandas as pa

from bgen_assets.catalog import Catalog

_DTYPES = {"bool": pa.Bool, "str": pa.String, "int": pa.Int64, "float": pa.Float64, "datetime": pa.DateTime, "date": pa.Date}


def _column(spec: dict) -> pa.Column:
    checks = []
    if "isin" in spec:
        checks.append(pa.Check.isin(spec["isin"]))
    if "in_range" in spec:
        low, high = spec["in_range"]
        if low is not None:
            checks.append(pa.Check.ge(low))
        if high is not None:
            checks.append(pa.Check.le(high))
    return pa.Column(_DTYPES[spec["type"]], checks=checks, nullable=spec.get("nullable", False), coerce=True)


@cache  # one per (catalog, table, kept): the graph asks for each hundreds of times, and pandera builds slowly
def table_schema(catalog: Catalog, table: str, kept: tuple[str, ...] = ()) -> pa.DataFrameSchema | None:
    """The table's schema; `kept`: a dataset's extra raw columns it carries last (text, may be empty)."""
    doc = catalog.table_doc(table)
    if not doc.get("columns"):
        return None
    return pa.DataFrameSchema(
        {**{name: _column(spec) for name, spec in doc["columns"].items()},
         **{name: pa.Column(pa.String, nullable=True, coerce=True) for name in kept}},
        name=table,
        strict=True,
        ordered=True,
        unique=doc.get("unique_together"),
    )


def describe_failures(error: pa.errors.SchemaErrors, limit: int = 10) -> str:
    """One line per failed (column, check), with the first failing row positions."""
    cases = error.failure_cases
    lines = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        rows = [int(i) for i in group["index"].dropna().head(5)]
        values = group["failure_case"].head(3).tolist()
        lines.append(f"column {column!r} fails {check}: rows {rows} values {values} ({len(group)} in all)")
    return "\n".join(lines[:limit])


def validate(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    return schema.validate(frame, lazy=True)
