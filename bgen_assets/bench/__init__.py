"""`make bench`: measured figures, one key per benchmark, merged into
$BGEN_HOME/bench/results.json with when and where they were taken.

    python -m bgen_assets.bench                      # all but full_run and utility (an hour or more each)
    python -m bgen_assets.bench --only tokens_per_event llm_client_throughput
    make bench ONLY=local_llm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path


from bgen_assets.bench.full_scale import full_run, full_scale
from bgen_assets.bench.utility import utility
from bgen_assets.bench.generator_fits import generator_benchmark
from bgen_assets.bench.llm_client import client_throughput
from bgen_assets.bench.llm_weeks import behaviorgen_pass_at_1, local_llm, tokens_per_event
from bgen_assets.bench.noop_user import noop_user
from bgen_assets.bench.recbole_parity import bert4rec_vs_recbole
from bgen_assets.bench.scaling import scaling
from bgen_assets.config import project


def results_path() -> Path:
    return project().home / "bench" / "results.json"


def record(key: str, value: dict) -> None:
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = {**value, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cpus"}
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"{key}: {json.dumps(value)}")


def _runner():
    from dagster import DagsterInstance

    from bgen_assets.runs import Runner, prepare_dagster_home

    prepare_dagster_home(project())
    runner = Runner.for_project(project(), DagsterInstance.get())
    runner.build_shared()
    return runner


BENCHMARKS = {
    "llm_client_throughput": lambda runner: client_throughput(),
    "tokens_per_event": tokens_per_event,
    "behaviorgen_pass_at_1": behaviorgen_pass_at_1,
    "local_llm": local_llm,
    "bert4rec_vs_recbole": bert4rec_vs_recbole,
    "generators": generator_benchmark,
    "full_scale": full_scale,
    "full_run": full_run,
    "noop_user": noop_user,
    "scaling": scaling,
    "utility": utility,
}
ON_REQUEST = ("full_run", "utility")  # an hour or more each: only with ONLY=NAME


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args(argv)
    selected = args.only or [name for name in BENCHMARKS if name not in ON_REQUEST]
    runner = None if set(selected) <= {"full_scale", "full_run", "scaling", "utility"} else _runner()  # these start from empty states of their own
    for name in selected:
        record(name, BENCHMARKS[name](runner))
    print(f"results: {results_path()}")

