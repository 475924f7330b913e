"""The OpenAI backend against a server nobody here wrote: Hugging Face's `transformers serve` on
loopback, serving the bundled SmolLM2. It ignores `response_format`, so the backend falls back to
plain text; token counts come from the server's `usage`; Pass@1 is whatever the model earns;
a rerun is answered from the cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bgen_assets.config import load_project
from bgen_assets.llm import BackendConfig, LLMRequest, Sampling
from bgen_assets.llm.local_hf import convert_bundled
from bgen_assets.llm.openai_backend import OpenAIBackend
from bgen_assets.runs import RunRequest
from conftest import SUBPROCESS_TIMEOUT, built_with_generator

LISTENING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
USER = "1004"


@pytest.fixture(scope="module")
def served_model():
    """`transformers serve` pinned to the converted SmolLM2 directory, on a port the OS picks;
    yields (base_url, model name)."""
    model = str(convert_bundled(load_project().model_cache))
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "transformers"), "serve", model, "--host", "127.0.0.1", "--port", "0",
         "--device", "cpu", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"})
    try:
        for line in server.stdout:  # it reports its port once listening (the model is loaded by then)
            found = LISTENING.search(line)
            if found:
                break
        else:
            raise AssertionError(f"transformers serve exited with {server.wait()} before listening")
        yield f"{found.group(1)}/v1", model
    finally:
        server.terminate()
        server.wait(timeout=SUBPROCESS_TIMEOUT)


def backend_config(base_url: str, model: str) -> dict:
    return {"kind": "openai", "base_url": base_url, "model": model, "api_key_env": "BGEN_TEST_UNUSED_KEY",
            "structured_output": "auto", "concurrency": 2, "timeout_s": float(SUBPROCESS_TIMEOUT), "max_retries": 2}


def test_a_server_that_ignores_response_format_is_asked_in_plain_text(served_model):
    from bgen_assets.llm import EventVocabulary

    backend = OpenAIBackend(BackendConfig(**backend_config(*served_model)))
    vocabulary = EventVocabulary({"Cafe": ("Food",), "Office": ("Work",)})
    request = LLMRequest(messages=({"role": "user", "content": "Write [0, 09:00, Cafe, Food]"},),
                         sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=24, seed=1), constraint=vocabulary)
    assert backend.sends_response_format
    [answer] = backend.complete([request])
    assert answer.error is None and answer.text and not answer.text.lstrip().startswith("{")
    assert not backend.sends_response_format  # detected from the answer: later requests go as text
    assert answer.prompt_tokens > 0 and 0 < answer.completion_tokens <= 24  # the server's own usage figures


def test_two_user_weeks_end_to_end_with_honest_pass_at_1_and_a_cached_rerun(tmp_path, fixture_data, served_model):
    params = {"backend": backend_config(*served_model), "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 120},
              "max_events_per_week": 4, "max_attempts": 1}  # two short requests: the CPU decodes slowly
    with built_with_generator(tmp_path, fixture_data, "behaviorgen", params) as runner:
        runner.materialize_user("tokyo", USER, "behaviorgen", max_weeks=2)
        log = runner.warehouse.query("SELECT * FROM tokyo.synthetic_behaviorgen_log ORDER BY week")
        assert len(log) == 2 and set(log["status"]) <= {"ok", "failed"}
        assert (log["llm_calls"] == log["attempts"]).all() and (log["llm_calls"] >= 1).all()
        assert (log["prompt_tokens"] > 0).all() and (log["completion_tokens"] > 0).all()
        assert (log["pass_at_1"] == ((log["attempts"] == 1) & (log["status"] == "ok"))).all()  # earned, not assumed
        failures = runner.warehouse.query("SELECT count(*) AS n FROM tokyo.synthetic_behaviorgen_failures")["n"].iloc[0] \
            if (log["status"] == "failed").any() else 0
        assert failures == (log["status"] == "failed").sum()
        written = runner.warehouse.query("SELECT count(*) AS n FROM tokyo.synthetic_behaviorgen")["n"].iloc[0]
        assert (written > 0) == (log["status"] == "ok").any()

        weeks = runner.user_weeks("tokyo", USER)[:2]  # the same partitions again: every answer from the cache
        runner.materialize_request(RunRequest(tuple(runner.synthetic_keys("tokyo", "behaviorgen")),
                                              (f"{USER}|{weeks[0]}", f"{USER}|{weeks[-1]}")))
        again = runner.warehouse.query("SELECT * FROM tokyo.synthetic_behaviorgen_log ORDER BY week")
        assert again["llm_calls"].sum() == 0 and (again["cache_hits"] >= 1).all()
