"""Shared fixtures: small datasets cut from the real logs in ../shared/data, a project
declaration pointing at them, and a Dagster instance + warehouse built once per session."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import instance_for_test
from servers import install_debian_package

from bgen_assets.catalog import Catalog
from bgen_assets.config import MODELS_DIR, PROJECT_ROOT, load_project
from bgen_assets.runs import Runner, instance_settings

SHARED_DATA = Path(os.environ.get("BGEN_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))
SUBPROCESS_TIMEOUT = int(os.environ.get("BGEN_TEST_SUBPROCESS_TIMEOUT", "900"))  # generous: a slow machine is no bug
TOKYO_USERS = ["1004", "1032", "107", "1172", "1184", "638"]
UBIQLOG_USERS = ["10_M", "1_M", "9_M", "25_F"]


def pytest_collection_modifyitems(items):
    """Every test's limit (pytest-timeout) derives from the one setting, unless it declares its own."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SUBPROCESS_TIMEOUT))


def cut_fixture_data(target: Path) -> Path:
    """A few real users per dataset (Tokyo: first quarter of 2019), written like the originals."""
    target.mkdir(parents=True, exist_ok=True)
    tokyo = pd.read_csv(SHARED_DATA / "tokyo_checkins.csv.gz", dtype=str)
    tokyo = tokyo[tokyo["user_id"].isin(TOKYO_USERS) & (tokyo["local_time"] < "2019-04-01")]
    tokyo.to_csv(target / "tokyo_checkins.csv.gz", index=False)
    ubiqlog = pd.read_csv(SHARED_DATA / "ubiqlog_app_events.csv.gz", dtype=str)
    ubiqlog[ubiqlog["user"].isin(UBIQLOG_USERS)].to_csv(target / "ubiqlog_app_events.csv.gz", index=False)
    shutil.copyfile(SHARED_DATA / "app_categories.csv.gz", target / "app_categories.csv.gz")
    return target


def write_project(folder: Path, data_dir: Path, edit=None) -> Path:
    """A project declaration like the repository's, on fixture data, with its state in `folder`.

    `edit(raw_dict)` may change the declaration before it is written."""
    raw = yaml.safe_load((PROJECT_ROOT / "bgen_project.yml").read_text())
    raw["state_dir"] = str(folder / "state")
    raw["data_dir"] = str(data_dir)
    raw["model_dir"] = str(load_project().model_cache)  # the converted model is shared, not rebuilt per test
    # users outside BehaviorGen's declared demo subset: the fixture demo stays offline-model free
    raw["scopes"]["demo"] = {"tokyo": {"users": ["1032", "638"], "max_weeks_per_user": 2},
                             "ubiqlog": {"users": ["1_M"], "max_weeks_per_user": 2}}
    for dataset in raw["datasets"].values():
        for source in dataset["sources"].values():
            source.pop("sha256", None)  # fixture files are cuts, not the published files
    if edit:
        edit(raw)
    path = folder / "bgen_project.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def project_env(project_file: Path) -> dict[str, str]:
    """This process's environment for a `bgen` command on the project declared in `project_file`."""
    env = {k: v for k, v in os.environ.items() if k not in ("BGEN_HOME", "BGEN_DATA_DIR", "BGEN_SCOPE", "DAGSTER_HOME")}
    env["BGEN_PROJECT"] = str(project_file)
    return env


def read_gz_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory) -> Path:
    return cut_fixture_data(tmp_path_factory.mktemp("data"))


@contextmanager
def project_instance(folder: Path):
    """A temporary Dagster instance with the repository's instance settings (dagster_instance.yaml)."""
    folder.mkdir(parents=True, exist_ok=True)
    with instance_for_test(temp_dir=str(folder), overrides=instance_settings(folder)) as instance:
        yield instance


@pytest.fixture(scope="session")
def built(tmp_path_factory, fixture_data):
    """The fixture project with its shared (unpartitioned) assets materialised once."""
    folder = tmp_path_factory.mktemp("built")
    project = load_project(write_project(folder, fixture_data))
    with project_instance(folder / "dagster") as instance:
        runner = Runner.for_project(project, instance)
        runner.build_shared()
        runner.fit_generators("tokyo", ["markov"])
        yield runner


@pytest.fixture(scope="session")
def tokyo_events(fixture_data) -> pd.DataFrame:
    """The fixture's Tokyo check-ins as `DS.events` rows (weekday 0 = Monday, 30-minute slots)."""
    raw = pd.read_csv(fixture_data / "tokyo_checkins.csv.gz", dtype=str)
    ts = pd.to_datetime(raw["local_time"])
    events = pd.DataFrame({"user_id": raw["user_id"], "ts": ts, "weekday": ts.dt.weekday,
                           "time_slot": (ts.dt.hour * 60 + ts.dt.minute) // 30,
                           "location": raw["venue_category"], "intent": raw["top_category"]})
    return events.sort_values(["user_id", "ts", "location"]).reset_index(drop=True)


def population_events(runner: Runner, with_profiles: bool = False):
    """The fixture's Tokyo population events (what a generator is fitted on), with profile columns if asked."""
    profiles = ("SELECT e.*, p.* EXCLUDE (user_id)", "JOIN tokyo.profiles p USING (user_id) ") if with_profiles \
        else ("SELECT e.*", "")
    return runner.warehouse.query(f"{profiles[0]} FROM tokyo.events e JOIN tokyo.user_split s USING (user_id) "
                                  f"{profiles[1]}WHERE s.role = 'population' ORDER BY user_id, ts")


@contextmanager
def built_on_copied_data(folder: Path, fixture_data: Path):
    """The fixture project on its own copy of the data (a test may edit the files), shared assets
    built; yields (runner, data directory)."""
    data = folder / "data"
    shutil.copytree(fixture_data, data)
    project = load_project(write_project(folder, data))
    with project_instance(folder / "dagster") as instance:
        runner = Runner.for_project(project, instance)
        runner.build_shared()
        yield runner, data


@contextmanager
def built_with_generator(folder: Path, data_dir: Path, name: str, params: dict):
    """The fixture project with one generator declaration only (the repository's, `params` laid
    over its own), its shared assets and that generator's Tokyo model materialised."""
    models = folder / "models"
    shutil.copytree(MODELS_DIR, models)
    for declaration in (models / "generators").glob("*.yml"):
        if declaration.stem != name:
            declaration.unlink()
    declaration = yaml.safe_load((models / "generators" / f"{name}.yml").read_text())
    declaration["params"] = {**declaration.get("params", {}), **params}
    declaration.pop("scope", None)  # the project's demo scope applies
    (models / "generators" / f"{name}.yml").write_text(yaml.safe_dump(declaration))
    project = load_project(write_project(folder, data_dir))
    with project_instance(folder / "dagster") as instance:
        runner = Runner.for_project(project, instance, Catalog(project, models))
        runner.build_shared()
        runner.fit_generators("tokyo", [name])
        yield runner


@contextmanager
def tokyo_experiment_runner(folder: Path, data_dir: Path, generators: tuple[str, ...], experiment: str):
    """The fixture project on Tokyo alone with only `generators` and one experiment `tiny`
    (`experiment`: its YAML), shared assets built; yields the runner."""
    models = folder / "models"
    shutil.copytree(MODELS_DIR, models)
    for declaration in [*(models / "generators").glob("*.yml"), *(models / "experiments").glob("*.yml")]:
        if declaration.stem not in generators:
            declaration.unlink()
    (models / "experiments" / "tiny.yml").write_text(experiment)

    def tokyo_only(raw):
        raw["datasets"].pop("ubiqlog")
        for scope in raw["scopes"].values():
            scope.pop("ubiqlog", None)

    project = load_project(write_project(folder, data_dir, tokyo_only))
    with project_instance(folder / "dagster") as instance:
        runner = Runner.for_project(project, instance, Catalog(project, models))
        runner.build_shared()
        yield runner


def generated_weeks(runner: Runner, dataset: str, generator: str, user: str, max_weeks: int | None = None) -> pd.DataFrame:
    """Materialise one user's partitions of a generator (fitting it on demand) and check what every
    generator promises: each (sampled) week in time order inside the week after its conditioning
    week, weekday and slot derived from `ts`, and every (location, intent) in the dataset's vocabulary."""
    runner.materialize_user(dataset, user, generator, max_weeks=max_weeks)
    generated = runner.warehouse.query(
        f'SELECT * FROM "{dataset}"."synthetic_{generator}" WHERE user_id = ? ORDER BY week, sample, ts', [user])
    assert len(generated) > 0 and (generated["generator"] == generator).all()
    vocabulary = runner.warehouse.query(f'SELECT location, intent FROM "{dataset}".vocabulary')
    assert set(zip(generated["location"], generated["intent"])) <= set(zip(vocabulary["location"], vocabulary["intent"]))
    for (week, _), events in generated.groupby(["week", "sample"]):
        target = pd.Timestamp(week) + pd.Timedelta(days=7)
        assert events["ts"].is_monotonic_increasing
        assert ((events["ts"] >= target) & (events["ts"] < target + pd.Timedelta(days=7))).all()
    slot_minutes = runner.project.slot_minutes
    assert (generated["ts"].dt.weekday == generated["weekday"]).all()
    assert ((generated["ts"].dt.hour * 60 + generated["ts"].dt.minute) // slot_minutes == generated["time_slot"]).all()
    return generated


def chromium() -> str:
    """Debian's Chromium for headless page checks, installed with apt-get when absent (waiting up to
    10 minutes for another install's lock)."""
    found = shutil.which("chromium")
    if found is None:
        install_debian_package("chromium")
        found = shutil.which("chromium")
    assert found, "chromium is not on PATH after installing it"
    return found


def headless_chromium(*arguments: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """Run headless Chromium (no sandbox: tests run as root) with `arguments`, e.g. a --screenshot."""
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", *arguments], capture_output=True, text=True, timeout=timeout, check=True)
