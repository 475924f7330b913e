"""`make bench ONLY=scaling`: how wall time and memory grow with the number of users.

Populations of 1x, 4x and 16x `BASE_USERS` users are drawn with replacement from the Tokyo
users (one seeded draw, so each population contains the smaller ones), each drawn user's
check-ins copied under a new id. Each population is built from an empty state directory with
Markov, in a fresh process, with 1 and 2 workers (timed once they have started); per stage: wall
seconds and the peak resident memory of the process and its workers together (sampled every
`SAMPLE_S`; shared pages count once per process, so an upper bound); and the size of the
partitioned tables' Parquet files.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from bgen_assets.config import project

DATASET = "tokyo"
GENERATOR = "markov"
BASE_USERS = 8  # 1x; 16x (128 users) is about Tokyo's size, and the whole benchmark fits in ~15 min on 2 cores
SCALES = (1, 4, 16)
WORKERS = (1, 2)
SAMPLE_S = 0.2


def resampled_population(folder: Path, users: int, seed: int = 13) -> int:
    """Write `users` Tokyo users drawn with replacement, under new ids, as the dataset's events file; returns its rows."""
    source = project().datasets[DATASET].sources["events"]
    events = pd.read_csv(project().data_directory / source.file, dtype=str)
    column = source.columns.user_id
    drawn = np.random.default_rng(seed).choice(sorted(events[column].unique()), size=max(SCALES) * BASE_USERS)[:users]
    by_user = dict(tuple(events.groupby(column)))
    population = pd.concat([by_user[user].assign(**{column: f"s{index:05d}"}) for index, user in enumerate(drawn)])
    folder.mkdir(parents=True, exist_ok=True)
    population.to_csv(folder / source.file, index=False)
    return len(population)


def tree_rss() -> int:
    """Resident bytes of this process and its descendants (the workers)."""
    total = 0
    me = psutil.Process()
    for process in (me, *me.children(recursive=True)):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:  # a worker that ended while we looked
            pass
    return total


@contextmanager
def measured(stages: dict, name: str):
    """Time the block and sample its peak memory into `stages[name]`."""
    peak = [tree_rss()]
    done = threading.Event()

    def sample():
        while not done.wait(SAMPLE_S):
            peak[0] = max(peak[0], tree_rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        done.set()
        sampler.join()
        stages[name] = {"wall_s": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak[0] / 2**20)}


def build_population(folder: str, workers: int) -> dict:
    """Every stage from an empty state directory on the population in `folder/data`, in this (fresh) process."""
    from dagster import DagsterInstance

    from bgen_assets.runs import Runner, prepare_dagster_home

    tokyo = project().datasets[DATASET]
    events = tokyo.sources["events"].model_copy(update={"sha256": None})  # the resampled file
    scoped = project().model_copy(update={
        "state_dir": Path(folder) / f"state_{workers}", "data_dir": Path(folder) / "data", "scope": "full",
        "datasets": {DATASET: tokyo.model_copy(update={"sources": {**tokyo.sources, "events": events}})}})
    prepare_dagster_home(scoped)
    stages: dict = {}
    runner = Runner.for_project(scoped, DagsterInstance.get(), workers=workers)
    runner.start_workers()
    if workers > 1:
        runner.worker_pool().wait_started()  # their start-up is not a stage's work
    try:
        with measured(stages, "shared assets"):
            runner.build_shared([DATASET])
        with measured(stages, f"fit {GENERATOR}"):
            runner.fit_generators(DATASET, [GENERATOR])
        with measured(stages, "weekly segments"):
            runner.build_segments(DATASET, None)
        with measured(stages, f"generate {GENERATOR}"):
            generated = runner.generate(DATASET, GENERATOR, None, None)
        with measured(stages, f"evaluate {GENERATOR}"):
            runner.evaluate_generators(DATASET, [GENERATOR])
    finally:
        runner.close()
    stored = sum(path.stat().st_size for path in Path(scoped.storage_root).rglob("*.parquet"))
    return {"user_weeks_generated": generated, "stages": stages, "partitioned_tables_mb": round(stored / 2**20, 1)}


def growth(runs: list[dict]) -> dict:
    """Each stage's wall time at every scale over its time at the first."""
    first = runs[0]["stages"]
    return {stage: [round(run["stages"][stage]["wall_s"] / max(first[stage]["wall_s"], 0.1), 2) for run in runs]
            for stage in first}


def scaling(_runner=None) -> dict:
    figures: dict = {"base_users": BASE_USERS, "generator": GENERATOR, "populations": []}
    with tempfile.TemporaryDirectory() as folder:
        for scale in SCALES:
            population = Path(folder) / f"x{scale}"
            rows = resampled_population(population / "data", scale * BASE_USERS)
            for workers in WORKERS:
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh_process:
                    measured_run = fresh_process.submit(build_population, str(population), workers).result()
                figures["populations"].append({"scale": scale, "users": scale * BASE_USERS, "events": rows,
                                               "workers": workers, **measured_run,
                                               "loadavg_1min_after": round(os.getloadavg()[0], 2)})
    figures["wall_s_growth_vs_1x"] = {f"workers_{workers}": growth([run for run in figures["populations"]
                                                                    if run["workers"] == workers])
                                      for workers in WORKERS}
    return figures
