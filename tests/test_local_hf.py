"""The `hf_local` backend with the real bundled SmolLM2-135M (converted once into the model cache).

Kept fast: a tiny vocabulary, short prompts, a few dozen new tokens, one backend per module."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from bgen_assets.config import PROJECT_ROOT, load_project
from bgen_assets.llm import BackendConfig, EventVocabulary, LLMRequest, Sampling
from bgen_assets.llm.event_format import parse_week
from bgen_assets.llm.local_hf import LocalHFBackend, convert_bundled, free_threads

MODEL_CACHE = load_project().model_cache

VOCABULARY = EventVocabulary({
    "Train Station": ("Travel & Transport",),
    "Office": ("Professional & Other Places",),
    "Ramen Restaurant": ("Food",),
    "Convenience Store": ("Shop & Service",),
    "Home (private)": ("Residence",),
})
WEEK = """[0, 08:10, Train Station, Travel & Transport]
[0, 09:00, Office, Professional & Other Places]
[0, 12:30, Ramen Restaurant, Food]
[0, 19:40, Convenience Store, Shop & Service]
[1, 08:05, Train Station, Travel & Transport]"""


def request(seed: int, week: str = WEEK, constrained: bool = True, max_tokens: int = 48) -> LLMRequest:
    system = ("You generate one week of a user's behaviour, one event per line as "
              "[weekday, HH:MM, location, intent]. Intents: " + ", ".join(VOCABULARY.intents) + ".")
    messages = ({"role": "system", "content": system},
                {"role": "user", "content": f"The user's last week:\n{week}\nWrite the next week."})
    return LLMRequest(messages, Sampling(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=seed),
                      VOCABULARY if constrained else None)


@pytest.fixture(scope="module")
def backend() -> LocalHFBackend:
    return LocalHFBackend(BackendConfig(batch_size=4, threads=2), MODEL_CACHE)


@pytest.fixture(scope="module")
def first_batch(backend):
    requests = [request(1), request(2), request(3, week=WEEK.splitlines()[0])]
    return requests, backend.complete(requests)


def test_constrained_batch_parses(first_batch):
    requests, responses = first_batch
    assert len(responses) == len(requests)
    for response in responses:
        week = parse_week(response.text, VOCABULARY)
        assert week.valid, (response.text, week.errors)
        assert response.finish_reason == "stop" and response.error is None
        assert 0 < response.completion_tokens <= 48
        assert response.prompt_tokens > 50 and response.latency_s > 0
    assert responses[2].prompt_tokens < responses[0].prompt_tokens  # the shorter prompt, unpadded count


def test_same_request_same_text_in_another_batch(backend, first_batch):
    requests, responses = first_batch
    again = backend.complete([request(9, week=WEEK + "\n[1, 09:00, Office, Professional & Other Places]"),
                              requests[1]])
    assert again[1].text == responses[1].text
    assert backend.complete([requests[2]])[0].text == responses[2].text


def test_unconstrained_returns_text(backend):
    response = backend.complete([request(4, constrained=False, max_tokens=24)])[0]
    assert response.text.strip()
    assert "<|im_end|>" not in response.text and "<|im_start|>" not in response.text
    assert response.finish_reason in ("stop", "length")
    assert 0 < response.completion_tokens <= 24


def test_throughput_and_live_progress(backend):
    from bgen_assets import progress

    reports = []
    before = dataclasses.replace(backend.throughput)
    progress.listen(lambda topic, figures: reports.append((topic, figures)))
    try:
        responses = backend.complete([request(5), request(6)])
    finally:
        progress.listen(None)
    done = [figures["done"] for topic, figures in reports if topic == "llm"]
    assert done[0] == 0 and done[-1] == 2 and done == sorted(done)
    assert {figures["total"] for _, figures in reports} == {2}
    after = backend.throughput
    assert after.prompt_tokens - before.prompt_tokens == sum(r.prompt_tokens for r in responses)
    assert after.completion_tokens - before.completion_tokens == sum(r.completion_tokens for r in responses)
    assert after.prompt_s > before.prompt_s and after.decode_s > before.decode_s


def test_converted_model_is_reused(backend):
    """A second conversion returns the existing directory untouched (same files, no new folder)."""
    target = convert_bundled(MODEL_CACHE)
    before = {path.name: path.stat().st_mtime_ns for path in target.iterdir()}
    siblings = set(MODEL_CACHE.iterdir())
    path = convert_bundled(MODEL_CACHE)
    assert path == target and (path / "config.json").is_file()
    assert {path.name: path.stat().st_mtime_ns for path in target.iterdir()} == before
    assert set(MODEL_CACHE.iterdir()) == siblings


def test_importing_the_backend_is_cheap():
    code = "import sys, bgen_assets.llm.local_hf; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.split() == ["False", "False"]


def test_threads_leave_busy_cores_alone(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (0.3, 0.3, 0.3))
    assert free_threads(2, 2) == 2 and free_threads(None, 2) == 2
    assert free_threads(2, 1) == 1  # a worker's share
    monkeypatch.setattr("os.getloadavg", lambda: (6.0, 6.0, 6.0))
    assert free_threads(2, 2) == 1


def test_a_model_path_must_be_a_model_directory(tmp_path):
    backend = LocalHFBackend(BackendConfig(model=str(tmp_path)), tmp_path)
    with pytest.raises(ValueError, match="neither"):
        backend.model_dir()
