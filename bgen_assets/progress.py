"""Live figures from inside a step (each training epoch) to the command's progress display.

A step runs in the command's process or in one of its worker processes; `report()` reaches the
listener the command installed either way: directly, or through the queue a worker was given
(`forward_to`), drained in the command by `relay`. Without a listener (the Dagster UI, tests)
reporting does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[str, dict], None]   # (topic, figures)
_listener: Listener | None = None


def report(topic: str, **figures) -> None:
    if _listener is not None:
        _listener(topic, figures)


def listen(listener: Listener | None) -> None:
    global _listener
    _listener = listener


def forward_to(queue) -> None:
    """In a worker process: reports go to the command over `queue`."""
    listen(lambda topic, figures: queue.put((topic, figures)))


def relay(queue) -> threading.Thread:
    """In the command: hand what workers put on `queue` to this process's listener (a daemon
    thread, ended by a None on the queue)."""
    def drain() -> None:
        for item in iter(queue.get, None):
            report(item[0], **item[1])

    thread = threading.Thread(target=drain, name="bgen-progress-relay", daemon=True)
    thread.start()
    return thread
