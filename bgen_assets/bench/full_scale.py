"""`make bench ONLY=full_scale`: the whole-scope commands at full scale, from an empty state
directory each time (the data directory is the project's).

  partitions, generate_compute_s, stage_wall_s, overhead_ratio   Markov over every Tokyo user-week
  noop_rerun_s          the same `bgen run` again as a user types it (a new process, nothing stale)
  segments_wall_s       every Tokyo user's weekly segments
  cpu_workers_speedup   Markov over every Tokyo user-week, `--workers 2` against 1
  llm_workers_speedup   BehaviorGen over the loopback OpenAI server (200 ms a request, one request
                        at a time per process) on >= 200 user-weeks, `--workers 4` against 1

`make bench ONLY=full_run` (key `full_run`, an hour or more): `bgen run --scope full --workers 2`
on each dataset from an empty state directory, every stage (generators, evaluation with the
privacy gate, the declared experiments, the report), wall and compute seconds per stage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bgen_assets.config import MODELS_DIR, PROJECT_ROOT, project

DATASET = "tokyo"
LLM_USER_WEEKS = 200


def fresh_runner(state_dir: Path, workers: int, models_dir: Path = MODELS_DIR):
    from dagster import DagsterInstance

    from bgen_assets.catalog import Catalog
    from bgen_assets.runs import Runner, prepare_dagster_home

    scoped = project().model_copy(update={"state_dir": state_dir, "scope": "full"})
    prepare_dagster_home(scoped)
    return Runner.for_project(scoped, DagsterInstance.get(), Catalog(scoped, models_dir), workers=workers)


def stage(runner, suffix: str):
    return next(record for record in runner.stages if record.name.endswith(suffix))


def markov_full_scale(state_dir: Path, workers: int) -> dict:
    """Every Tokyo user-week with Markov from an empty state directory (shared assets not timed)."""
    runner = fresh_runner(state_dir, workers)
    runner.start_workers()  # as `bgen run` does: they start while the shared assets are built
    runner.build_shared([DATASET])
    runner.fit_generators(DATASET, ["markov"])
    started = time.perf_counter()
    runner.build_segments(DATASET, None)
    segments_wall = time.perf_counter() - started
    started = time.perf_counter()
    generated = runner.generate(DATASET, "markov", None, None)
    wall = time.perf_counter() - started
    partitions = len(runner.instance.get_materialized_partitions(runner.synthetic_keys(DATASET, "markov")[0]))
    runner.close()
    return {"user_weeks_generated": generated, "partitions": partitions, "stage_wall_s": round(wall, 1),
            "generate_compute_s": round(stage(runner, " markov").compute_s, 1), "segments_wall_s": round(segments_wall, 1),
            "runs": len(stage(runner, " markov").outcomes)}


def noop_rerun(state_dir: Path) -> float:
    """The generate command again, in a new process as a user runs it; nothing is stale."""
    env = {**os.environ, "BGEN_HOME": str(state_dir)}
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "bgen"), "run", "--scope", "full", "--dataset", DATASET,
                    "--generator", "markov", "--stage", "generate"], cwd=PROJECT_ROOT, env=env, check=True,
                   capture_output=True)
    return round(time.perf_counter() - started, 1)


def loopback_generation(folder: Path, base_url: str, workers: int) -> tuple[float, int, float]:
    """BehaviorGen (`bench_loopback`, concurrency 1) over the first users' weeks up to 200: seconds,
    user-weeks, and the seconds the workers took to start (not in the first figure: a command
    starts them while it checks the shared assets; on a busy machine they may take longer)."""
    models = folder / "models"
    shutil.copytree(MODELS_DIR, models)
    spec = {"kind": "behaviorgen", "seed": 1,
            "params": {"backend": {"kind": "openai", "base_url": base_url, "model": "loopback", "concurrency": 1,
                                   "timeout_s": 10.0, "max_retries": 2}, "max_attempts": 1, "max_events_per_week": 12}}
    (models / "generators" / "bench_loopback.yml").write_text(yaml.safe_dump(spec))
    runner = fresh_runner(folder / "state", workers, models)
    started = time.perf_counter()
    runner.start_workers()
    if workers > 1:
        runner.worker_pool().wait_started()
    start_up = time.perf_counter() - started
    runner.build_shared([DATASET])
    runner.build_segments(DATASET, None)
    status = runner.synthetic_status(DATASET, "bench_loopback", None, None)
    per_user = status.groupby("user_id").size()
    chosen = list(per_user.index[per_user.cumsum().shift(fill_value=0) < LLM_USER_WEEKS])
    started = time.perf_counter()
    generated = runner.generate(DATASET, "bench_loopback", chosen, None)
    seconds = time.perf_counter() - started
    runner.close()
    return seconds, generated, start_up


def full_scale(_runner=None) -> dict:
    from bgen_assets.testing.loopback_server import serve

    with tempfile.TemporaryDirectory() as folder:
        figures = markov_full_scale(Path(folder) / "one", workers=1)
        figures["overhead_ratio"] = round(figures["stage_wall_s"] / figures["generate_compute_s"], 2)
        figures["noop_rerun_s"] = noop_rerun(Path(folder) / "one")
        two = markov_full_scale(Path(folder) / "two", workers=2)
        figures["markov_workers_2_stage_wall_s"] = two["stage_wall_s"]
        figures["cpu_workers_speedup"] = round(figures["stage_wall_s"] / two["stage_wall_s"], 2)
        with serve(latency_s=0.2, process=True) as base_url:
            one_s, weeks, _ = loopback_generation(Path(folder) / "llm1", base_url, workers=1)
            four_s, _, start_up = loopback_generation(Path(folder) / "llm4", base_url, workers=4)
        figures.update({"llm_user_weeks": weeks, "llm_workers_1_s": round(one_s, 1), "llm_workers_4_s": round(four_s, 1),
                        "llm_workers_speedup": round(one_s / four_s, 2), "llm_workers_4_start_up_s": round(start_up, 1)})
    return figures


def full_run(_runner=None, workers: int = 2) -> dict:
    """`bgen run --scope full --workers 2` per dataset from an empty state directory."""
    from bgen_assets.cli import STAGES, run_scope

    figures: dict = {"workers": workers, "cpus": os.cpu_count()}
    for dataset in project().datasets:
        with tempfile.TemporaryDirectory() as folder:
            runner = fresh_runner(Path(folder), workers)
            started = time.perf_counter()
            runner.start_workers()
            try:
                run_scope(runner, [dataset], None, None, STAGES)
            finally:
                runner.close()
            figures[dataset] = {
                "total_wall_s": round(time.perf_counter() - started, 1),
                "stages": {record.name: {"wall_s": round(record.wall_s, 1), "compute_s": round(record.compute_s, 1),
                                         "runs": len(record.outcomes), "units": record.units}
                           for record in runner.stages if record.outcomes},
                "loadavg_1min_after": round(os.getloadavg()[0], 2),
            }
    return figures
