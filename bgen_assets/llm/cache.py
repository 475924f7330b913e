"""Content-addressed cache of LLM answers, so an unchanged prompt is never sent twice.

The key hashes (backend, model, messages, sampling incl. seed, output constraint). Entries
are JSON files under the state directory, written atomically (temp file + rename) as each answer
arrives, so a run killed mid-way leaves only whole entries and resumes from every one of them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

from bgen_assets.llm import Backend, LLMRequest, LLMResponse, OnResponse


def request_key(backend: str, model: str, request: LLMRequest) -> str:
    constraint = None
    if request.constraint is not None:
        allowed = {location: sorted(intents) for location, intents in request.constraint.intents_by_location.items()}
        constraint = hashlib.sha256(json.dumps(allowed, sort_keys=True).encode()).hexdigest()  # whatever the order given
    payload = {"backend": backend, "model": model, "messages": list(request.messages),
               "sampling": dataclasses.asdict(request.sampling), "constraint": constraint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class CachedBackend:
    """Wraps a backend: answers from the cache where it can, calls the backend for the rest."""

    def __init__(self, backend: Backend, folder: Path):
        self.backend, self.folder = backend, folder
        self.name, self.model = backend.name, backend.model
        self.calls = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def _load(self, key: str) -> LLMResponse | None:
        path = self._path(key)
        if not path.exists():
            return None
        stored = json.loads(path.read_text())
        return LLMResponse(**{**stored, "cached": True, "latency_s": 0.0, "transport_retries": 0})

    def _store(self, key: str, response: LLMResponse) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            json.dump(dataclasses.asdict(response), handle)
        os.replace(handle.name, path)

    def complete(self, requests: list[LLMRequest], on_response: OnResponse | None = None) -> list[LLMResponse]:
        keys = [request_key(self.name, self.model, request) for request in requests]
        answers = [self._load(key) for key in keys]
        missing = [i for i, answer in enumerate(answers) if answer is None]

        def arrived(position: int, response: LLMResponse) -> None:
            """Stored the moment it arrives: a run killed midway resumes from every answer it got."""
            i = missing[position]
            answers[i] = response
            if response.error is None:  # failures are retried next time, not remembered
                self._store(keys[i], response)
            if on_response:
                on_response(i, response)

        if missing:
            self.backend.complete([requests[i] for i in missing], arrived)
            self.calls += len(missing)
        if on_response:
            for i, answer in enumerate(answers):
                if answer.cached:
                    on_response(i, answer)
        return answers
