"""The declarative catalogue under `models/`: SQL models, CSV seeds, the schema file and
macros, rendered with a dbt-style `ref()` / `var()`.

Layout:
  models/seeds/NAME.csv        -> asset seeds/NAME, table seeds.NAME
  models/dataset/NAME.sql      -> asset DS/NAME for every dataset DS (unless DS overrides it)
  models/DS/NAME.sql           -> asset DS/NAME for dataset DS only
  models/per_generator/NAME.sql -> asset DS/NAME_GEN for every dataset DS and generator GEN
                                  (models/generators/GEN.yml); the template sees `generator`
  models/schema.yml            -> descriptions, column docs and column checks of every table
  models/macros.sql            -> Jinja macros available to every model
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import jinja2

from bgen_assets import names
from bgen_assets.code_versions import code_version
from bgen_assets.config import ConfigError, Project, read_yaml
from bgen_assets.names import SEEDS, Relation

SHARED_MODELS = "dataset"
PER_GENERATOR = "per_generator"
KEPT_COLUMN_TABLES = ("raw_events", "events")  # the tables that carry a dataset's `columns.keep`


@dataclass(frozen=True)
class SqlModel:
    relation: Relation
    path: Path
    sql: str
    refs: tuple[Relation, ...] = field(default=())
    doc_name: str = ""          # its entry in schema.yml, when not the table's own name

    @property
    def table_doc_name(self) -> str:
        return self.doc_name or self.relation.name

    @property
    def code_version(self) -> str:
        return code_version(self.sql, length=16)


class Catalog:
    def __init__(self, project: Project, models_dir: Path | None = None):
        self.project = project
        self.models_dir = models_dir = models_dir or project.declarations
        macros = models_dir / "macros.sql"
        self._macro_source = macros.read_text() if macros.exists() else ""
        self._jinja = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)

    @cached_property
    def schema_file(self) -> dict:
        path = self.models_dir / "schema.yml"
        return read_yaml(path) if path.exists() else {}

    def table_doc(self, name: str) -> dict:
        """The schema-file entry of a table (generic name, e.g. `events`, or `seeds/NAME`)."""
        return self.schema_file.get("tables", {}).get(name, {})

    @cached_property
    def seeds(self) -> list[tuple[Relation, Path]]:
        folder = self.models_dir / SEEDS
        return [(names.seed(path.stem), path) for path in sorted(folder.glob("*.csv"))]

    def model_files(self, dataset: str) -> dict[str, Path]:
        """The dataset's SQL models by name: the shared ones, then the folders it declares
        (`sql_models`), then its own `models/DS/`, each overriding the models of the same name before."""
        folders = [SHARED_MODELS, *self.project.datasets[dataset].sql_models, dataset]
        for folder in folders[1:-1]:
            if not (self.models_dir / folder).is_dir():
                raise ConfigError(f"datasets.{dataset}.sql_models: no folder {self.models_dir / folder}")
        return {path.stem: path for folder in folders for path in sorted((self.models_dir / folder).glob("*.sql"))}

    def render(self, path: Path, dataset: str, generator: str | None = None) -> SqlModel:
        refs: list[Relation] = []
        variables = {**self._defaults(), **self.project.datasets[dataset].vars}

        def ref(reference: str) -> str:
            relation = Relation.parse(reference, dataset)
            refs.append(relation)
            return relation.sql

        def var(name: str, default=Ellipsis):
            if name in variables:
                return variables[name]
            if default is not Ellipsis:
                return default
            raise KeyError(f"{path}: var({name!r}) is not declared for dataset {dataset!r} in bgen_project.yml")

        template = self._jinja.from_string(self._macro_source + path.read_text())
        sql = template.render(ref=ref, var=var, dataset=dataset, generator=generator,
                              kept_columns=self.kept_columns(dataset, "events")).strip().rstrip(";")
        unique_refs = tuple(dict.fromkeys(refs))
        if generator is None:
            return SqlModel(names.sql_model(dataset, path.stem), path, sql, unique_refs)
        return SqlModel(names.per_generator_model(dataset, path.stem, generator), path, sql, unique_refs,
                        doc_name=path.stem)

    def kept_columns(self, dataset: str, table: str) -> tuple[str, ...]:
        """The extra raw columns the dataset's events source keeps (`columns.keep`), which the
        raw events and the shared events model carry."""
        if dataset not in self.project.datasets or table not in KEPT_COLUMN_TABLES:
            return ()
        return tuple(self.project.datasets[dataset].sources["events"].columns.keep)

    def _defaults(self) -> dict:
        split = self.project.split
        return {"slot_minutes": self.project.slot_minutes, "train_share": split.train_share,
                "valid_share": split.valid_share, "limited_records": split.limited_records}

    @cache
    def models(self, dataset: str) -> list[SqlModel]:
        """Rendered once per catalogue: the code location and the schema map both read them."""
        from bgen_assets.generators import load_generator_specs

        generators = [spec.name for spec in load_generator_specs(self.models_dir / "generators")]
        per_generator = sorted((self.models_dir / PER_GENERATOR).glob("*.sql"))
        return [self.render(path, dataset) for path in self.model_files(dataset).values()] + [
            self.render(path, dataset, generator) for path in per_generator for generator in generators]
