"""`make bench ONLY=noop_user`: how long `bgen user tokyo 1004 --generator markov` takes when
nothing is stale, in new processes as a user runs it: answered from the stored check
(bgen_assets/up_to_date.py), and as a full check (Dagster, the asset graph and the staleness
queries; what the first call after any change costs). Wall and CPU seconds, with the load the
machine was under."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

from bgen_assets.config import project
from bgen_assets.up_to_date import answers_folder

COMMAND = ["user", "tokyo", "1004", "--generator", "markov"]


def timed_noop() -> tuple[float, float]:
    """(wall, CPU) seconds of one call, which must find nothing to do."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bgen_assets.cli", *COMMAND], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert "everything up to date" in done.stdout, done.stdout  # a no-op, or the figure means nothing
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def noop_user(runner, repeats: int = 3) -> dict:
    subprocess.run([sys.executable, "-m", "bgen_assets.cli", *COMMAND], check=True, capture_output=True)  # up to date
    figures = {"command": "bgen " + " ".join(COMMAND), "repeats": repeats}
    for name, forget in (("stored_check", False), ("full_check", True)):
        times = []
        for _ in range(repeats):
            if forget:
                shutil.rmtree(answers_folder(project()), ignore_errors=True)
            times.append(timed_noop())
        figures[name] = {"wall_seconds_median": round(statistics.median(w for w, _ in times), 2),
                         "cpu_seconds_median": round(statistics.median(c for _, c in times), 2)}
    return figures | {"load_average_1min": round(os.getloadavg()[0], 2)}
