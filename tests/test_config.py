import pytest
import yaml

from bgen_assets.config import PROJECT_FILE, PROJECT_ROOT, ConfigError, load_project


def write(tmp_path, change) -> object:
    raw = yaml.safe_load(PROJECT_FILE.read_text())
    change(raw)
    path = tmp_path / "bgen_project.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_declaration_loads():
    project = load_project(environ={})
    assert set(project.datasets) == {"tokyo", "ubiqlog"}
    assert project.slot_minutes == 30
    assert project.split.population_share == 0.7
    assert project.home.name == ".bgen"


def test_environment_overrides_state_and_data_dirs(tmp_path):
    project = load_project(environ={"BGEN_HOME": str(tmp_path / "h"), "BGEN_DATA_DIR": str(tmp_path)})
    assert project.home == tmp_path / "h"
    assert project.data_directory == tmp_path
    assert project.warehouse_path == tmp_path / "h" / "warehouse.duckdb"
    assert project.storage_root == str(tmp_path / "h" / "partitions")


@pytest.mark.parametrize(("storage", "root"), [
    ("s3://bucket/bgen", "s3://bucket/bgen"),
    ("/data/bgen", "/data/bgen"),
    ("shards/a", str(PROJECT_ROOT / "shards" / "a")),  # relative to the repository, like state_dir
])
def test_the_storage_root_of_partitioned_tables_is_declared_or_overridden(storage, root):
    assert load_project(environ={"BGEN_STORAGE": storage}).storage_root == root


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda raw: raw.update(slot_minutes=7), "slot_minutes"),
        (lambda raw: raw["split"].update(population_share=1.5), "split.population_share"),
        (lambda raw: raw["scopes"]["demo"].update(nowhere={}), "scopes.demo.nowhere"),
        (lambda raw: raw["datasets"]["tokyo"]["sources"]["events"].pop("columns"), "datasets.tokyo.sources.events"),
        (lambda raw: raw["datasets"]["tokyo"]["sources"]["events"]["columns"].pop("user_id"),
         "datasets.tokyo.sources.events.columns.user_id"),
        (lambda raw: raw.update(colour="blue"), "colour"),
        (lambda raw: raw.update(scope="nonexistent"), "scope 'nonexistent'"),
    ],
)
def test_invalid_configuration_names_the_key(tmp_path, change, key):
    with pytest.raises(ConfigError) as error:
        load_project(write(tmp_path, change), environ={})
    assert key in str(error.value)
