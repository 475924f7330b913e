#!/usr/bin/env python3
"""Mutation checks: breakages the suite once let through (issue 15), each of which must now make
a test fail. Every mutation is applied to a fresh temporary copy of the repository (its tracked
and not-ignored files, with ../shared linked beside it), the tests named for it are run there,
and it is reported `caught by` the failing test, or `MISSED` (they all passed). The same tests are
first run unmutated: they must pass, or a catch would mean nothing.

    .venv/bin/python .ci/mutations.py           # every mutation
    .venv/bin/python .ci/mutations.py gate      # those whose name contains "gate"

Mutations:
  markov-history         markov.generate uses the whole history it is given, later weeks too
  synthetic-history      the synthetic asset gives a generator the user's whole history
  both-histories         both of the above (the breakage as the issue found it)
  gate-mia-off           the privacy gate ignores the membership-inference accuracy
  source-always-new      observing a source file gives a new data version every time
  constant-code-version  a generator's code version is its kind alone, whatever its declaration
and claims the suite did not test (issue 15's list):
  ubiqlog-gap-strict     UbiqLog spans exactly 60 s apart no longer merge into one session
  ubiqlog-no-seed        UbiqLog's hand seed (package -> intent) is ignored
  replacement-with-real  the replacement scenario also fine-tunes on the user's real train part
  augmentation-any-week  the augmentation scenario takes every synthetic week, not only those
                         conditioned on the limited records
  scope-epochs-uncapped  a scope's `max_epochs` no longer caps training
  scope-users-uncapped   a scope's `max_pretrain_users` no longer samples the population

Exit status: 0 when every mutation is caught, 1 otherwise (a miss, a failing unmutated run, or
a mutation that no longer applies because the code it replaces has changed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    replacements: tuple[tuple[str, str, str], ...]  # (file, text that must occur once, its replacement)
    tests: tuple[str, ...]


MARKOV_HISTORY = ("bgen_assets/generators/markov.py",
                  'past = history[history["week"] <= week]', "past = history")
SYNTHETIC_HISTORY = ("bgen_assets/assets/synthetic.py",
                     'histories[user][histories[user]["week"] <= week]', "histories[user]")

MUTATIONS = (
    Mutation("markov-history", (MARKOV_HISTORY,), ("tests/test_markov.py",)),
    Mutation("synthetic-history", (SYNTHETIC_HISTORY,), ("tests/test_event_splits.py",)),
    Mutation("both-histories", (MARKOV_HISTORY, SYNTHETIC_HISTORY),
             ("tests/test_markov.py", "tests/test_event_splits.py")),
    Mutation("gate-mia-off", (("bgen_assets/quality/gate.py",
                               "not math.isnan(attack) and attack > gate.max_membership_inference_accuracy", "False"),),
             ("tests/test_privacy.py",)),
    Mutation("source-always-new", (("bgen_assets/assets/raw.py", "DataVersion(version)",
                                    "DataVersion(__import__('uuid').uuid4().hex)"),),
             ("tests/test_user_partitions.py::test_a_second_build_rebuilds_nothing",)),
    Mutation("constant-code-version", (("bgen_assets/assets/synthetic.py",
                                        'return f"{spec.kind}-{digest.hexdigest()[:12]}"', "return spec.kind"),),
             ("tests/test_user_partitions.py::test_editing_a_generator_declarations_params_makes_its_partitions_stale",)),
    Mutation("ubiqlog-gap-strict", (("models/ubiqlog/app_sessions.sql", "WHEN span_start > previous_end",
                                     "WHEN span_start >= previous_end"),), ("tests/test_ubiqlog_models.py",)),
    Mutation("ubiqlog-no-seed", (("models/ubiqlog/events.sql", "coalesce(pi.intent, cgi.intent",
                                  "coalesce(cgi.intent"),), ("tests/test_ubiqlog_models.py",)),
    Mutation("replacement-with-real", (("bgen_assets/experiments.py", 'sources, valid_rows = {"synthetic"',
                                        'sources, valid_rows = {"real": real_train, "synthetic"'),),
             ("tests/test_experiment_scenarios.py",)),
    Mutation("augmentation-any-week", (("bgen_assets/experiments.py", 'weeks = synthetic[synthetic["limited"]]',
                                        "weeks = synthetic"),), ("tests/test_experiment_scenarios.py",)),
    Mutation("scope-epochs-uncapped", (("bgen_assets/experiments.py", "cap = self.scoped(scope).max_epochs",
                                        "cap = None"),), ("tests/test_experiment_scenarios.py",)),
    Mutation("scope-users-uncapped", (("bgen_assets/experiments.py", "if users is not None and users < len(chosen):",
                                       "if False:"),), ("tests/test_experiment_scenarios.py",)),
)


def repository_copy(target: Path) -> Path:
    """The repository's tracked and not-ignored files under target/repo, with target/shared
    pointing at the real ../shared (the tests' data)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    repo = target / "repo"
    for name in filter(None, files):
        if (ROOT / name).is_file():  # a file deleted but not yet committed is listed too
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    if (ROOT.parent / "shared").exists():
        (target / "shared").symlink_to(ROOT.parent / "shared")
    return repo


def apply(repo: Path, mutation: Mutation) -> None:
    for file, old, new in mutation.replacements:
        path = repo / file
        text = path.read_text()
        if text.count(old) != 1:
            raise LookupError(f"{mutation.name}: {file} holds `{old}` {text.count(old)} times, not once; update this script")
        path.write_text(text.replace(old, new))


def run_tests(repo: Path, tests: tuple[str, ...]) -> tuple[int, list[str]]:
    """pytest's exit status on `tests` in the copy (whose code comes first on the path), and the
    tests that failed."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                         cwd=repo, env=environment, capture_output=True, text=True, check=False)
    failed = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("FAILED ")]
    return run.returncode, failed


def check(mutation: Mutation | None, tests: tuple[str, ...]) -> str:
    with tempfile.TemporaryDirectory(prefix="bgen-mutation-") as folder:
        repo = repository_copy(Path(folder))
        if mutation:
            try:
                apply(repo, mutation)
            except LookupError as error:
                return f"not applied: {error}"
        status, failed = run_tests(repo, tests)
    if mutation is None:
        return "pass" if status == 0 else f"FAIL: {' '.join(failed) or f'pytest exit status {status}'}"
    if status == 1:
        return f"caught by {' '.join(failed)}"
    # 2: interrupted or a collection error, ...: proves nothing
    return "MISSED" if status == 0 else f"error (pytest exit status {status})"


def main(selected: list[str]) -> int:
    mutations = [m for m in MUTATIONS if not selected or any(word in m.name for word in selected)]
    tests = tuple(dict.fromkeys(test for m in mutations for test in m.tests))
    unmutated = check(None, tests)
    print(f"{'(unmutated)':<24}{unmutated} ({' '.join(tests)})", flush=True)
    outcomes = []
    for mutation in mutations:
        outcomes.append(check(mutation, mutation.tests))
        print(f"{mutation.name:<24}{outcomes[-1]}", flush=True)
    return 0 if unmutated == "pass" and all(outcome.startswith("caught") for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
