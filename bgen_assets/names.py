"""Every asset key and warehouse table name, built from the declarations' names.

An asset's key is the (schema, table) of the warehouse table it writes: the schema is the
dataset (`DS`), or `seeds`. GEN is a generator declaration (models/generators/GEN.yml), EXP an
experiment (models/experiments/EXP.yml), MODEL a SQL model file (models/dataset/MODEL.sql or models/DS/MODEL.sql).

  key in the UI             built by                 defined in
  DS/NAME_file              source_file()            bgen_assets/assets/raw.py (observed file)
  DS/raw_events             raw_events()             bgen_assets/assets/raw.py
  DS/raw_NAME               raw_lookup()             bgen_assets/assets/raw.py
  seeds/NAME                seed()                   models/seeds/NAME.csv, bgen_assets/assets/sql_models.py
  DS/MODEL                  sql_model()              models/dataset|DS/MODEL.sql, bgen_assets/assets/sql_models.py
  DS/MODEL_GEN              per_generator_model()    models/per_generator/MODEL.sql (training_set_GEN ...)
  DS/user_split, DS/profiles, DS/weekly_segments     bgen_assets/assets/users.py
  DS/GEN_model              generator_model()        bgen_assets/assets/synthetic.py
  DS/synthetic_GEN          synthetic()              bgen_assets/assets/synthetic.py (+ _log, _failures tables)
  DS/fidelity_GEN           fidelity()               bgen_assets/assets/evaluation.py
  DS/privacy_GEN            privacy()                bgen_assets/assets/evaluation.py
  DS/EXP_real               experiment_real()        bgen_assets/assets/training.py
  DS/EXP_with_GEN           experiment_with()        bgen_assets/assets/training.py
  DS/utility_results        utility_results()        bgen_assets/assets/training.py
  DS/report                 report()                 bgen_assets/assets/report.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Dagster loads with the graph, not with the command line's quick paths
    from dagster import AssetKey

SEEDS = "seeds"


@dataclass(frozen=True)
class Relation:
    """A table in the warehouse, addressed as (schema, name) and as a Dagster key."""

    schema: str
    name: str

    @property
    def key(self) -> AssetKey:
        from dagster import AssetKey

        return AssetKey([self.schema, self.name])

    @property
    def key_path(self) -> list[str]:
        return [self.schema, self.name]

    @property
    def sql(self) -> str:
        return f'"{self.schema}"."{self.name}"'

    @staticmethod
    def parse(reference: str, dataset: str) -> Relation:
        """`ref()`'s argument: `NAME` (the dataset's) or `SCHEMA/NAME`."""
        schema, _, name = reference.rpartition("/")
        return Relation(schema or dataset, name)

    @staticmethod
    def of(key: AssetKey) -> Relation:
        schema, name = key.path
        return Relation(schema, name)


def source_file(dataset: str, source: str) -> Relation:
    return Relation(dataset, f"{source}_file")


def raw_events(dataset: str) -> Relation:
    return Relation(dataset, "raw_events")


def raw_lookup(dataset: str, source: str) -> Relation:
    return Relation(dataset, f"raw_{source}")


def seed(name: str) -> Relation:
    return Relation(SEEDS, name)


def sql_model(dataset: str, model: str) -> Relation:
    return Relation(dataset, model)


def per_generator_model(dataset: str, model: str, generator: str) -> Relation:
    return Relation(dataset, f"{model}_{generator}")


def user_split(dataset: str) -> Relation:
    return Relation(dataset, "user_split")


def profiles(dataset: str) -> Relation:
    return Relation(dataset, "profiles")


def weekly_segments(dataset: str) -> Relation:
    return Relation(dataset, "weekly_segments")


def weekly_segments_versions(dataset: str) -> Relation:
    """Each user's segments version, which synthetic partitions record (not an asset)."""
    return Relation(dataset, "weekly_segments_versions")


def generator_model(dataset: str, generator: str) -> Relation:
    return Relation(dataset, f"{generator}_model")


def synthetic(dataset: str, generator: str) -> Relation:
    return Relation(dataset, f"synthetic_{generator}")


def synthetic_log(dataset: str, generator: str) -> Relation:
    """One row per generated (user, week): its accounting and input version (not an asset)."""
    return Relation(dataset, f"synthetic_{generator}_log")


def synthetic_failures(dataset: str, generator: str) -> Relation:
    """Every failed generation attempt, kept after a retry succeeds (not an asset)."""
    return Relation(dataset, f"synthetic_{generator}_failures")


def training_set(dataset: str, generator: str) -> Relation:
    return per_generator_model(dataset, "training_set", generator)


def fidelity(dataset: str, generator: str) -> Relation:
    return Relation(dataset, f"fidelity_{generator}")


def privacy(dataset: str, generator: str) -> Relation:
    return Relation(dataset, f"privacy_{generator}")


def evaluations(dataset: str, generator: str) -> list[Relation]:
    return [fidelity(dataset, generator), privacy(dataset, generator)]


def experiment_real(dataset: str, experiment: str) -> Relation:
    return Relation(dataset, f"{experiment}_real")


def experiment_with(dataset: str, experiment: str, generator: str) -> Relation:
    return Relation(dataset, f"{experiment}_with_{generator}")


def utility_results(dataset: str) -> Relation:
    return Relation(dataset, "utility_results")


def report(dataset: str) -> Relation:
    return Relation(dataset, "report")
