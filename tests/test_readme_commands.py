"""The README's commands: every `bgen` command line parses (the subcommand and its flags
exist), every `make` target resolves, and the `bgen` lines that need neither a GPU nor the
offline LLM run, in README order, on the fixture project."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bgen_assets.cli import command_parser
from bgen_assets.config import PROJECT_ROOT
from conftest import SUBPROCESS_TIMEOUT, write_project

BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
NEEDS_GPU_OR_OFFLINE_LLM = ("behavior_lora", "behaviorgen")  # covered by test_local_hf and test_behavior_lora


def readme_commands() -> list[list[str]]:
    commands = []
    for block in BASH_BLOCK.findall((PROJECT_ROOT / "README.md").read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for substituted in re.findall(r"\$\(([^)]*)\)", line):  # $(bgen home): a command too
                commands.append(shlex.split(substituted))
            line = re.sub(r"^([A-Z_]+=(\$\([^)]*\)|\S+)\s+)+", "", line)  # VAR=value prefixes
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def bgen_lines() -> list[list[str]]:
    return [words[1:] for words in readme_commands() if words and words[0].endswith("bin/bgen")]


def test_every_readme_command_exists():
    commands = readme_commands()
    assert bgen_lines() and any(words[0] == "make" for words in commands)
    parser = command_parser()
    for arguments in bgen_lines():
        parser.parse_args(arguments)  # exits (fails the test) on an unknown command or flag
    for words in commands:
        if words[0] == "make":
            dry = subprocess.run(["make", "-n", *words[1:]], cwd=PROJECT_ROOT, capture_output=True, text=True)
            assert dry.returncode == 0, f"make {' '.join(words[1:])}: {dry.stderr}"
        else:
            assert words[0].endswith(("bin/bgen", "bin/dagster")), f"README command not checked here: {words}"


@pytest.mark.timeout(3 * SUBPROCESS_TIMEOUT)
def test_readme_bgen_lines_run_on_fixture_data(tmp_path, fixture_data):
    project_file = write_project(tmp_path, fixture_data)
    env = {k: v for k, v in os.environ.items() if k not in ("BGEN_HOME", "BGEN_SCOPE", "DAGSTER_HOME")}
    env.update(BGEN_PROJECT=str(project_file), COLUMNS="200")
    ran = []
    for arguments in bgen_lines():
        if any(name in arguments for name in NEEDS_GPU_OR_OFFLINE_LLM) or arguments[0] in ("ui",):
            continue
        result = subprocess.run([str(Path(sys.executable).parent / "bgen"), *arguments], cwd=PROJECT_ROOT, env=env,
                                capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
        assert result.returncode == 0, f"bgen {' '.join(arguments)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        ran.append(arguments[0])
    assert {"run", "user", "build", "home"} <= set(ran)
