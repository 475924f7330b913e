"""`make bench ONLY=noop_user`: how long `bgen user tokyo 1004 --generator markov` takes when
nothing is stale (imports, definitions, instance start and the staleness checks), in new
processes as a user runs it; wall and CPU seconds, with the load the machine was under."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

COMMAND = ["user", "tokyo", "1004", "--generator", "markov"]


def noop_user(runner, repeats: int = 3) -> dict:
    command = [sys.executable, "-m", "bgen_assets.cli", *COMMAND]
    subprocess.run(command, check=True, capture_output=True)  # brings the user up to date first
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        assert "everything up to date" in done.stdout, done.stdout  # a no-op, or the figure means nothing
    return {"command": "bgen " + " ".join(COMMAND), "wall_seconds_median": round(statistics.median(walls), 2),
            "wall_seconds_min": round(min(walls), 2), "cpu_seconds_median": round(statistics.median(cpus), 2),
            "load_average_1min": round(os.getloadavg()[0], 2), "repeats": repeats}
