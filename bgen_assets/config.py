"""The project declaration (`bgen_project.yml`) as validated pydantic models.

Environment overrides: BGEN_HOME (state directory), BGEN_DATA_DIR (data directory),
BGEN_SCOPE (which declared scope the demo uses), BGEN_MODEL_DIR (converted local models),
BGEN_STORAGE (where partitioned tables' Parquet files live).
BGEN_DAGSTER_POSTGRES_URL is the PostgreSQL server of `dagster.storage: postgres`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bgen_assets.domain import MINUTES_PER_DAY

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = Path(os.environ.get("BGEN_PROJECT", PROJECT_ROOT / "bgen_project.yml"))
MODELS_DIR = PROJECT_ROOT / "models"
POSTGRES_URL_VARIABLE = "BGEN_DAGSTER_POSTGRES_URL"


class ConfigError(ValueError):
    """Invalid project configuration; the message names the offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnMapping(StrictModel):
    """Which columns of a raw file hold the canonical event fields."""

    user_id: str
    ts: str = Field(description="event timestamp, or the start of a span")
    end_ts: str | None = Field(default=None, description="end of a span (start/end sources)")
    location: str
    intent: str | None = Field(default=None, description="absent when a SQL model derives it")
    utc_offset: str | None = Field(default=None, description="each row's offset from UTC (minutes, or +HH:MM): the "
                                   "timestamps are UTC and become that row's local time")
    keep: list[str] = Field(default_factory=list, description="other columns kept as they are (text, may be empty) in "
                            "DS/raw_events and DS/events, for SQL models and profiles: latitude, venue_id ...")

    @field_validator("keep")
    @classmethod
    def _kept_names_are_free(cls, keep: list[str]) -> list[str]:
        taken = {"user_id", "ts", "end_ts", "location", "intent", "weekday", "time_slot", "source_row", "source_file"}
        clashing = sorted(set(keep) & taken) or sorted({name for name in keep if keep.count(name) > 1})
        if clashing:
            raise ValueError(f"keep: {', '.join(clashing)} is a column name bgen uses, or repeated; rename it in the file")
        return keep


class SourceFile(StrictModel):
    """One raw file of a dataset, found in the data directory or downloaded and checked."""

    file: str = Field(description="a file in the data directory, or (events only) a glob pattern such as "
                      "`checkins_*.csv.gz`: every matching file, read as one source in name order")
    sha256: str | None = None
    url: str | None = None
    format: Literal["csv", "parquet"] = "csv"
    delimiter: str = ","
    kind: Literal["events", "lookup", "profiles"] = "events"
    columns: ColumnMapping | None = None
    timestamp_format: str | None = Field(default=None, description="strptime format, or epoch_s / epoch_ms (seconds or "
                                         "milliseconds since 1970, UTC); None = ISO")
    intents: list[str] | None = Field(
        default=None, description="the intents the file may hold; another is refused (None = any)")
    utc_times: bool | None = Field(default=None, description="timestamps marked UTC (Z, +00:00) in a dataset whose "
                                   "timezone is not UTC: true = UTC, converted; false = local times mislabelled, read "
                                   "as they are. Undeclared, such a file is refused rather than shifted silently")

    @property
    def is_pattern(self) -> bool:
        return any(character in self.file for character in "*?[")

    @model_validator(mode="after")
    def _events_need_columns(self) -> SourceFile:
        if self.kind == "events" and self.columns is None:
            raise ValueError("an events source needs a `columns` mapping")
        if self.is_pattern and (self.kind != "events" or self.sha256 or self.url):
            raise ValueError(f"`file: {self.file}` is a pattern: only an events source may be several files, "
                             "and without `sha256` or `url` (each names one file)")
        if self.intents is not None and (self.columns is None or self.columns.intent is None):
            raise ValueError("`intents` needs an intent column in `columns`")
        return self


class ProfileInference(StrictModel):
    """How profile attributes a dataset lacks are inferred: the declared SQL rules, or an LLM."""

    method: Literal["rules", "llm"] = "rules"
    generator: str = Field("behaviorgen", description="llm: the generator declaration whose backend answers")


class Dataset(StrictModel):
    description: str = ""
    timezone: str = "UTC"
    sources: dict[str, SourceFile]
    profile_inference: ProfileInference = ProfileInference()
    sql_models: list[str] = Field(default_factory=list, description="folders under models/ whose SQL models this "
                                  "dataset uses too, in order (e.g. foursquare); its own models/DS/ wins over them")
    vars: dict[str, bool | int | float | str | list[str]] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {name!r} (an IANA name such as Asia/Tokyo)") from None
        return name

    @field_validator("sources")
    @classmethod
    def _one_events_source(cls, sources: dict[str, SourceFile]) -> dict[str, SourceFile]:
        if "events" not in sources or sources["events"].kind != "events":
            raise ValueError("each dataset needs a source named `events` of kind `events`")
        others = [name for name, source in sources.items() if source.kind == "events" and name != "events"]
        if others:
            raise ValueError(f"a second events source ({', '.join(others)}): a dataset has one, `events`; several "
                             "files of it are declared as a glob pattern in `events.file`")
        return sources

    @property
    def profile_source(self) -> str | None:
        return next((name for name, s in self.sources.items() if s.kind == "profiles"), None)


class Split(StrictModel):
    population_share: float = Field(0.7, gt=0, lt=1)
    seed: int = 0
    train_share: float = Field(0.6, gt=0, lt=1, description="individual users: first share of events, fine-tune train")
    valid_share: float = Field(0.2, gt=0, lt=1, description="the next share, validation; the rest is test")
    limited_records: int = Field(100, gt=0, description="the few-records scenario: a user's first N train events")

    @model_validator(mode="after")
    def _leaves_a_test_share(self) -> Split:
        if self.train_share + self.valid_share >= 1:
            raise ValueError("train_share + valid_share must leave a test share (< 1)")
        return self


class ScopeSelection(StrictModel):
    """A declared subset: users (None = all) and at most this many weeks per user."""

    users: list[str] | None = None
    max_weeks_per_user: int | None = Field(default=None, gt=0)


class PrivacyGate(StrictModel):
    """Thresholds of the privacy check on every synthetic table (`DS/privacy_NAME`)."""

    overlap: float = Field(0.5, gt=0, le=1, description="a synthetic week this close to a real week counts as a near copy")
    max_share_weeks_at_overlap: float = Field(
        0.2, ge=0, le=1, description="largest share of synthetic weeks allowed to have a real week at least `overlap` close")
    max_membership_inference_accuracy: float = Field(
        0.75, ge=0.5, le=1, description="best cross-validated accuracy of the membership attacks allowed")


class DagsterSettings(StrictModel):
    """Where Dagster keeps its runs and events, and where a run's steps execute (README "Running on
    a cluster"). The default needs no server. Server URLs come from environment variables, read
    when Dagster connects: they may hold passwords, so they are never written to a file or a run."""

    storage: Literal["sqlite", "postgres"] = Field(
        "sqlite", description=f"postgres: run, event-log and schedule storage on the PostgreSQL server at "
        f"${POSTGRES_URL_VARIABLE} (dagster-postgres); sqlite: files under the state directory")
    executor: Literal["in_process", "celery"] = Field(
        "in_process", description="celery: each run's steps on Celery workers (dagster-celery) through the broker "
        "at $CELERY_BROKER_URL, results at $CELERY_RESULT_BACKEND (e.g. both redis://HOST:6379/0)")


class Project(StrictModel):
    state_dir: Path = Path(".bgen")
    data_dir: Path | None = None
    model_dir: Path | None = Field(default=None, description="converted local models; default STATE/models")
    declarations_dir: Path | None = Field(
        default=None, description="SQL models, seeds, generator and experiment declarations; default the repository's models/")
    storage: str | None = Field(
        default=None, description="partitioned tables' Parquet files: a directory or fsspec URL; default STATE/partitions")
    slot_minutes: int = Field(30, gt=0, le=240)
    split: Split = Split()
    scope: str = "demo"
    scopes: dict[str, dict[str, ScopeSelection]]
    datasets: dict[str, Dataset]
    privacy_gate: PrivacyGate = PrivacyGate()
    dagster: DagsterSettings = DagsterSettings()

    @field_validator("slot_minutes")
    @classmethod
    def _divides_a_day(cls, minutes: int) -> int:
        if MINUTES_PER_DAY % minutes:
            raise ValueError(f"must divide {MINUTES_PER_DAY} (a day) evenly")
        return minutes

    @model_validator(mode="after")
    def _scopes_name_known_datasets(self) -> Project:
        if self.scope not in self.scopes:
            raise ValueError(f"scope {self.scope!r} is not declared under `scopes`")
        for scope_name, selection in self.scopes.items():
            for dataset in selection:
                if dataset not in self.datasets:
                    raise ValueError(f"scopes.{scope_name}.{dataset}: unknown dataset")
        return self

    @property
    def home(self) -> Path:
        path = self.state_dir if self.state_dir.is_absolute() else PROJECT_ROOT / self.state_dir
        return path.resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def storage_root(self) -> str:
        if self.storage is None:
            return str(self.home / "partitions")
        if "://" in self.storage or Path(self.storage).is_absolute():
            return self.storage
        return str((PROJECT_ROOT / self.storage).resolve())

    @property
    def model_cache(self) -> Path:
        if self.model_dir is None:
            return self.home / "models"
        return self.model_dir if self.model_dir.is_absolute() else (PROJECT_ROOT / self.model_dir).resolve()

    @property
    def declarations(self) -> Path:
        if self.declarations_dir is None:
            return MODELS_DIR
        return self.declarations_dir if self.declarations_dir.is_absolute() else (PROJECT_ROOT / self.declarations_dir).resolve()

    @property
    def download_cache(self) -> Path:
        return self.home / "downloads"

    @property
    def data_directory(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir if self.data_dir.is_absolute() else (PROJECT_ROOT / self.data_dir).resolve()
        shared = (PROJECT_ROOT.parent / "shared" / "data").resolve()
        return shared if shared.is_dir() else self.download_cache

    def scope_datasets(self, scope: str | None = None) -> list[str]:
        """The datasets a scope builds: those it names, or every dataset when it names none."""
        named = self.scopes[scope or self.scope]
        return [dataset for dataset in self.datasets if not named or dataset in named]

    def selection(self, dataset: str, scope: str | None = None) -> ScopeSelection:
        return self.scopes[scope or self.scope].get(dataset, ScopeSelection())


def merged(base: dict, override: dict) -> dict:
    """`override` laid over `base`, nested mappings merged key by key."""
    result = dict(base)
    for key, value in override.items():
        result[key] = merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def read_yaml(path: Path):
    """A YAML file's content, parsed by libyaml (PyYAML's pure-Python parser costs a no-op command ~0.4 s)."""
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


def load_declarations(folder: Path, model: type[BaseModel]) -> list:
    """Every `folder/*.yml` as `model` (its `name` is the file's stem). `extends: OTHER` starts
    from OTHER's declaration less its description and scope, so a variant states only what it
    changes (e.g. an ablation switching one prompt component off)."""
    raw = {path.stem: read_yaml(path) or {} for path in sorted(folder.glob("*.yml"))}

    def resolve(name: str, seen: tuple[str, ...] = ()) -> dict:
        declaration = dict(raw[name])
        parent = declaration.pop("extends", None)
        if parent is None:
            return declaration
        if parent not in raw or parent in seen:
            raise ConfigError(f"invalid declaration {folder / name}.yml: extends unknown or circular {parent!r}")
        inherited = {k: v for k, v in resolve(parent, (*seen, name)).items() if k not in ("description", "scope")}
        return merged(inherited, declaration)

    declarations = []
    for name in raw:
        try:
            declarations.append(model.model_validate({"name": name, **resolve(name)}))
        except ValueError as exc:
            raise ConfigError(f"invalid declaration {folder / name}.yml: {exc}") from None
    return declarations


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"invalid configuration in {path}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def load_project(path: Path = PROJECT_FILE, environ: dict[str, str] | None = None) -> Project:
    """Parse and validate the declaration, applying BGEN_* environment overrides."""
    env = os.environ if environ is None else environ
    try:
        raw = read_yaml(path) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration in {path}: the top level must be a mapping")
    overrides = {"state_dir": "BGEN_HOME", "data_dir": "BGEN_DATA_DIR", "scope": "BGEN_SCOPE",
                 "model_dir": "BGEN_MODEL_DIR", "storage": "BGEN_STORAGE"}
    raw.update({key: env[var] for key, var in overrides.items() if env.get(var)})
    try:
        return Project.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


@lru_cache(maxsize=1)
def project() -> Project:
    return load_project()
