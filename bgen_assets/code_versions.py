"""Code versions are content hashes of what decides a table (functions' and modules' source,
template files, settings), never numbers bumped by hand: editing that code makes the table stale."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def code_version(*parts: Callable | ModuleType | Path | str, length: int = 12) -> str:
    """A hash of the given functions' and modules' source, files' bytes and settings' text, in order."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            data = part.read_bytes()
        elif isinstance(part, str):
            data = part.encode()
        else:
            data = inspect.getsource(part).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:length]
