"""The package's layout rules, checked on its source: lower layers never import upper ones, no two
modules share a name, every generator kind implements the contract in the module of its name,
and every repository path a docstring, comment or the README cites exists."""

import ast
import re
from pathlib import Path

from bgen_assets.generators import KINDS, generator_kind, load_generator_specs
from bgen_assets.generators.contract import GeneratorKind

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bgen_assets"
# Orchestration and Dagster assets: everything else is a library they build on.
UPPER = ("bgen_assets.assets", "bgen_assets.definitions", "bgen_assets.runs", "bgen_assets.cli", "bgen_assets.workers",
         "bgen_assets.staleness", "bgen_assets.up_to_date", "bgen_assets.cluster", "bgen_assets.bench",
         "bgen_assets.testing")
GROUND_FLOOR = ("bgen_assets.domain", "bgen_assets.names", "bgen_assets.code_versions")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("bgen_assets")}


def within(name: str, prefixes) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_lower_layers_never_import_assets_or_orchestration():
    upward = {name: sorted(i for i in imports(path) if within(i, UPPER))
              for name, path in MODULES.items() if not within(name, UPPER)}
    assert {name: found for name, found in upward.items() if found} == {}


def test_the_ground_floor_imports_nothing_of_bgen():
    assert {name: sorted(imports(MODULES[name])) for name in GROUND_FLOOR} == {name: [] for name in GROUND_FLOOR}


def test_no_two_modules_or_packages_share_a_name():
    leaves = [name.rsplit(".", 1)[-1] for name in MODULES if name != "bgen_assets"]
    assert sorted({leaf for leaf in leaves if leaves.count(leaf) > 1}) == []


def test_every_kind_implements_the_contract_in_the_module_of_its_name():
    for kind in KINDS:
        implementation = generator_kind(kind)
        assert isinstance(implementation, GeneratorKind), kind
        assert type(implementation).__module__ == f"bgen_assets.generators.{kind}", kind
        assert "bgen_assets.config.project" not in imports(MODULES[f"bgen_assets.generators.{kind}"]), kind
    assert {spec.kind for spec in load_generator_specs()} <= set(KINDS)


CREATED_BY_THE_README = {"models/nyc/events.sql", "models/generators/behaviorgen_vllm.yml"}  # examples it shows
CITED = re.compile(r"(?<![\w/.$])((?:bgen_assets|models|prompts|tests|\.ci)/[\w./*-]*[\w*])")


def test_every_cited_repository_path_exists():
    texts = {path: path.read_text() for path in [*PACKAGE.rglob("*.py"), ROOT / "README.md", ROOT / "Makefile",
                                                  ROOT / "dagster_instance.yaml", ROOT / "bgen_project.yml"]}
    missing = set()
    for path, text in texts.items():
        for cited in CITED.findall(text):
            placeholder = re.sub(r"\b(?:[A-Z][A-Z_]+|\*)\b|\*", "*", cited)  # NAME, DS, KIND ... stand for any name
            if cited not in CREATED_BY_THE_README and not list(ROOT.glob(placeholder.rstrip("/.") or cited)):
                missing.add(f"{path.relative_to(ROOT)}: {cited}")
    assert sorted(missing) == []
