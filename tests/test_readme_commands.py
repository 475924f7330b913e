"""The README's commands: every `bgen` command line parses (the subcommand and its flags
exist) and every `make` target resolves. The `bgen` lines themselves run in the end-to-end test
(tests/test_demo_end_to_end.py), before `bgen demo` on the same state directory."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess

from bgen_assets.cli import command_parser
from bgen_assets.config import PROJECT_ROOT

BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
NAMED_GENERATORS_NOT_RUN = ("behavior_lora", "behaviorgen")  # a GPU; all of a user's weeks offline (test_local_hf)


def readme_commands() -> list[list[str]]:
    commands = []
    for block in BASH_BLOCK.findall((PROJECT_ROOT / "README.md").read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for substituted in re.findall(r"\$\(([^)]*)\)", line):  # $(bgen home): a command too
                commands.append(shlex.split(substituted))
            line = re.sub(r"^(export\s+)?([A-Z_]+=(\$\([^)]*\)|\S+)(\s+|$))+", "", line)  # VAR=value prefixes, exports
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def bgen_lines() -> list[list[str]]:
    return [words[1:] for words in readme_commands() if words and words[0].endswith("bin/bgen")]


def runnable_bgen_lines() -> list[list[str]]:
    """The README's `bgen` lines a test can run on fixture data: not the UI (it serves until
    stopped, tests/test_ui.py) and not those naming a generator in NAMED_GENERATORS_NOT_RUN."""
    return [arguments for arguments in bgen_lines()
            if arguments[0] != "ui" and not any(name in arguments for name in NAMED_GENERATORS_NOT_RUN)]


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
        elif words[0].endswith("bin/celery"):  # a worker of the app the Celery executor sends steps to
            app = words[words.index("-A") + 1]
            assert words[words.index("-A") + 2] == "worker" and importlib.import_module(app).app, words
        else:
            assert words[0].endswith(("bin/bgen", "bin/dagster")), f"README command not checked here: {words}"
