"""Running independent Dagster runs side by side in worker processes.

`bgen run --workers N` hands each batch of independent runs (blocks of synthetic partitions,
generators' fits, evaluations, experiments) to N spawned processes, each holding the project's
definitions and the same Dagster instance. They share only the warehouse's short locked reads and
writes (bgen_assets/warehouse.py), so an LLM call, a fit or an epoch in one never holds up another.
Stopping (Ctrl-C, SIGTERM) terminates the workers: a run cut short leaves no partial partition
(writes are single transactions) and claims nothing a later command would wait for.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed

PR_SET_PDEATHSIG = 1
_runner = None  # the worker process's Runner


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _start_worker(project, models_dir, instance_ref, threads: int, reports, started) -> None:
    _die_with_parent()
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)   # before torch is imported: N workers share the cores
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from dagster import DagsterInstance

    from bgen_assets import progress
    from bgen_assets.catalog import Catalog
    from bgen_assets.definitions import build_definitions
    from bgen_assets.runs import Runner

    progress.forward_to(reports)
    import openai  # noqa: F401  the LLM client's SDK (~1 s): imported while the command checks its inputs, not in a run
    global _runner
    _runner = Runner(project, build_definitions(project, Catalog(project, models_dir)),
                     DagsterInstance.from_ref(instance_ref), Catalog(project, models_dir))
    with started.get_lock():
        started.value += 1


def _run(request):
    return _runner.materialize_request(request)


class WorkerPool:
    """`workers` spawned processes, started once per command (they import the project and build its
    definitions while the command does its first checks) and reused by every stage.

    A concurrent.futures pool, not multiprocessing.Pool: killing the latter's workers (stopping, a
    failed run) leaves its task queue's lock with a dead holder, and terminating it then waits forever."""

    def __init__(self, runner):
        from bgen_assets import progress

        threads = max(1, (os.cpu_count() or 1) // runner.workers)
        context = multiprocessing.get_context("spawn")
        self.reports = context.Queue()   # epochs and other live figures from the workers' steps
        self.relay = progress.relay(self.reports)
        self.started = context.Value("i", 0)   # workers done starting up
        self.killed = False
        self.workers = runner.workers
        self.executor = ProcessPoolExecutor(
            runner.workers, mp_context=context, initializer=_start_worker,
            initargs=(runner.project, runner.catalog.models_dir, runner.instance.get_ref(), threads, self.reports,
                      self.started))
        # a spawned pool starts a worker per task submitted while none is idle: one task each starts them all now
        self.start_tasks = [self.executor.submit(int) for _ in range(runner.workers)]

    def wait_started(self) -> None:
        """Until every worker has its definitions (a benchmark times the work, not the start-up);
        raises BrokenProcessPool if one could not start."""
        while self.started.value < self.workers:
            for task in self.start_tasks:
                if task.done():
                    task.result()
            time.sleep(0.1)

    def run(self, requests: list) -> Iterator:
        """The requests' outcomes as they complete; the largest start first, so that no worker is
        left with a long run while the others idle."""
        futures = [self.executor.submit(_run, request) for request in sorted(requests, key=lambda r: -r.units)]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:  # stopping (Ctrl-C, SIGTERM) or a failed run: the workers go at once
            self.kill()
            raise

    def kill(self) -> None:
        self.killed = True
        for process in multiprocessing.active_children():
            process.kill()   # SIGKILL: Dagster's handlers inside a worker may swallow SIGTERM
        self.executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self.killed:  # nothing to wait for; a killed worker may hold the progress queue's lock
            return
        self.executor.shutdown()
        self.reports.put(None)
        self.relay.join()


def run_requests(runner, requests: list) -> Iterator:
    """Each request's outcome as it completes (in this process when one worker suffices)."""
    if runner.workers <= 1 or len(requests) <= 1:
        for request in requests:
            yield runner.materialize_request(request)
        return
    yield from runner.worker_pool().run(requests)
