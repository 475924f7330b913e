"""The `openai` backend against the project's own OpenAI-compatible loopback server (no mocks:
real HTTP on 127.0.0.1, the real SDK client). The server answers with the event lines of the
last user message, so every prompt below carries its own distinct week and the answer must
give back exactly that week."""

from __future__ import annotations

import asyncio

import pytest

from bgen_assets.llm import BackendConfig, EventVocabulary, LLMRequest, Sampling
from bgen_assets.llm.event_format import parse_week
from bgen_assets.testing.loopback_server import serve, stats
from bgen_assets.llm.openai_backend import (
    PLACEHOLDER_KEY,
    OpenAIBackend,
    resolve_api_key,
)

VOCAB = EventVocabulary({
    "Home": ("Rest", "Sleep"),
    "Office": ("Work", "Meeting"),
    "Gym": ("Sport",),
    "Cafe": ("Eat", "Meet"),
    "Station": ("Transit",),
})
PLACES = [(loc, intent) for loc, intents in sorted(VOCAB.intents_by_location.items()) for intent in intents]
SYSTEM = ("You generate one week of a person's behaviour. Answer with one event per line, "
          "[weekday, HH:MM, location, intent], and nothing else.")


def week_lines(i: int) -> list[str]:
    """A distinct week for request i: 3-7 events, sorted, no two at the same minute."""
    lines = []
    for k in range(3 + i % 5):
        weekday, minute = k % 7, (i * 37 + k * 211) % 1440
        location, intent = PLACES[(i + 3 * k) % len(PLACES)]
        lines.append((weekday, minute, f"[{weekday}, {minute // 60:02d}:{minute % 60:02d}, {location}, {intent}]"))
    return [line for *_, line in sorted(lines)]


def request(i: int, faults: str = "") -> LLMRequest:
    example = "[0, 08:00, Home, Rest]\n[0, 09:00, Office, Work]"   # a few-shot turn: NOT the answer
    target = "\n".join(week_lines(i))
    last = f"History of user {i}, the week to continue:\n{target}\nNow write the next week."
    if faults:
        last += f"\n#faults: {faults}"
    return LLMRequest(
        messages=({"role": "system", "content": SYSTEM},
                  {"role": "user", "content": f"Example week:\n{example}"},
                  {"role": "assistant", "content": example},
                  {"role": "user", "content": last}),
        sampling=Sampling(temperature=0.7, top_p=0.9, max_tokens=256, seed=i),
        constraint=VOCAB,
    )


def expected(i: int) -> list[tuple]:
    out = []
    for line in week_lines(i):
        day, hhmm, location, intent = line.strip("[]").split(", ")
        hour, minute = map(int, hhmm.split(":"))
        out.append((int(day), hour * 60 + minute, location, intent))
    return out


def events_of(text: str) -> list[tuple]:
    parsed = parse_week(text, VOCAB)
    assert parsed.valid, parsed.errors
    return [tuple(row) for row in parsed.events.itertuples(index=False)]


def backend(base_url: str, **overrides) -> OpenAIBackend:
    options = {"backoff_s": 0.01, "backoff_max_s": 0.05} | overrides.pop("options", {})
    fields = {"kind": "openai", "model": "loopback-echo", "base_url": base_url, "api_key_env": "BGEN_TEST_NO_SUCH_KEY",
              "concurrency": 4, "timeout_s": 5.0, "max_retries": 3, "structured_output": "auto", "options": options}
    return OpenAIBackend(BackendConfig(**(fields | overrides)))


@pytest.mark.parametrize("structured_output", ["auto", "text"])
def test_plain_run_gives_back_every_week_in_order(structured_output):
    n = 24
    with serve(latency_s=0.3) as url:  # long enough that requests overlap even on a slow machine
        client = backend(url, concurrency=6, structured_output=structured_output)
        responses = client.complete([request(i) for i in range(n)])
        served = stats(url)
    assert len(responses) == n
    for i, response in enumerate(responses):
        assert response.error is None
        assert events_of(response.text) == expected(i)
        assert response.text.startswith("{") == (structured_output == "auto")
        assert response.transport_retries == 0
        assert response.finish_reason == "stop"
        assert response.prompt_tokens > 0 and response.completion_tokens > 0
        assert response.latency_s >= 0.3
    assert served["chat_requests"] == n and served["faults"] == {"ok": n}
    assert served["with_response_format"] == (n if structured_output == "auto" else 0)
    assert 1 < served["max_in_flight"] <= 6      # concurrent, and never past the semaphore


def test_transport_faults_are_retried_until_every_week_is_right():
    plans = ["429@0.1", "500", "timeout", "malformed", "bad_shape", "503@0.05", "502",
             "429@0.1,500", "malformed,timeout", "500,429@0.05,bad_shape", "", "timeout,timeout,503"]
    n = 36
    faults = [plans[i % len(plans)] for i in range(n)]
    with serve() as url:
        client = backend(url, concurrency=8, timeout_s=0.4, max_retries=3)
        responses = client.complete([request(i, faults[i]) for i in range(n)])
        served = stats(url)
    for i, response in enumerate(responses):
        planned = len([f for f in faults[i].split(",") if f])
        assert response.error is None, (i, response.error)
        assert events_of(response.text) == expected(i)
        assert response.transport_retries == planned <= 3
    served_faults = served["faults"]
    assert served_faults["ok"] == n
    assert sum(served_faults.values()) == served["chat_requests"] == n + sum(r.transport_retries for r in responses)
    assert {"429", "500", "502", "503", "timeout", "malformed", "bad_shape"} <= set(served_faults)


def test_retry_after_is_honoured_rather_than_backoff(monkeypatch):
    """Every request fails once with 429 + Retry-After: 0.1, then succeeds: each waits the
    server's Retry-After, and the client's own backoff is never consulted."""
    backoffs = []
    monkeypatch.setattr(OpenAIBackend, "_backoff", lambda self, retry: backoffs.append(retry) or 3.0)
    with serve(per_prompt=["429@0.1"]) as url:
        client = backend(url, concurrency=8)
        responses = client.complete([request(i) for i in range(8)])
    for i, response in enumerate(responses):
        assert response.error is None and events_of(response.text) == expected(i)
        assert response.transport_retries == 1
        assert response.latency_s >= 0.1
    assert backoffs == []


def test_cyclic_server_errors_sequentially():
    """`faults` applied over all requests in arrival order: one in three gets a 500."""
    with serve(faults=["500", "ok", "ok"]) as url:
        client = backend(url, concurrency=1)
        responses = client.complete([request(i) for i in range(6)])
        served = stats(url)
    assert [r.transport_retries for r in responses] == [1, 0, 1, 0, 1, 0]
    assert all(events_of(r.text) == expected(i) for i, r in enumerate(responses))
    assert served["faults"] == {"500": 3, "ok": 6}


def test_exhausted_retries_set_error_without_raising_or_leaking_the_key(monkeypatch):
    key = "sk-test-PLANTED-3f9c2a7d41b8e6a0c5d2"
    monkeypatch.setenv("BGEN_TEST_PLANTED_KEY", key)
    batch = [request(0, "500,500,500,500"),            # more failures than max_retries
             request(1, "timeout,timeout,timeout"),
             request(2, "401"),                         # not retried; the server quotes the key
             request(3, "429@0.05")]                   # recovers
    with serve() as url:
        client = backend(url, api_key_env="BGEN_TEST_PLANTED_KEY", max_retries=2, timeout_s=0.3)
        assert key not in repr(client)
        responses = client.complete(batch)
        served = stats(url)
    failed, timed_out, unauthorized, ok = responses
    assert failed.error and "500" in failed.error and failed.transport_retries == 2 and failed.text == ""
    assert timed_out.error and "timed out" in timed_out.error and timed_out.transport_retries == 2
    assert unauthorized.error and "401" in unauthorized.error and unauthorized.transport_retries == 0
    assert ok.error is None and events_of(ok.text) == expected(3) and ok.transport_retries == 1
    for response in responses:
        assert key not in (response.error or "") and "PLANTED-3f9c" not in (response.error or "")
    assert served["faults"]["401"] == 1


def test_structured_output_auto_falls_back_to_text_when_refused():
    with serve(reject_response_format=True) as url:
        client = backend(url, concurrency=3, structured_output="auto")
        first = client.complete([request(i) for i in range(6)])
        after_first = stats(url)
        second = client.complete([request(i) for i in range(6, 12)])
        after_second = stats(url)
        strict = backend(url, structured_output="json_schema").complete([request(12)])
    for i, response in enumerate(first + second):
        assert response.error is None and not response.text.startswith("{")
        assert events_of(response.text) == expected(i)
        assert response.transport_retries == 0      # a refused format is not a transport retry
    assert 1 <= after_first["faults"]["reject_format"] <= 3    # at most the requests already in flight
    assert after_second["with_response_format"] == after_first["with_response_format"]  # sticky
    assert strict[0].error and "response_format" in strict[0].error


def test_structured_output_sends_the_week_schema():
    with serve() as url:
        [response] = backend(url, structured_output="json_schema").complete([request(5)])
        [unconstrained] = backend(url, structured_output="json_schema").complete(
            [LLMRequest(request(6).messages, Sampling(), None)])
    assert response.text.startswith('{"events"') and events_of(response.text) == expected(5)
    assert not unconstrained.text.startswith("{") and events_of(unconstrained.text) == expected(6)


def test_content_level_faults_pass_through_for_the_caller_to_judge():
    with serve() as url:
        truncated, garbage = backend(url, structured_output="text").complete(
            [request(4, "truncated"), request(5, "garbage")])
    assert truncated.error is None and truncated.finish_reason == "length" and truncated.transport_retries == 0
    assert not parse_week(truncated.text, VOCAB).valid
    assert "\n".join(week_lines(4)).startswith(truncated.text)
    assert garbage.error is None and garbage.finish_reason == "stop"
    assert parse_week(garbage.text, VOCAB).errors

    # a repair turn (no event lines, no directive in the last user message) gets the week right
    original = request(5, "garbage")
    repair = LLMRequest(original.messages + ({"role": "assistant", "content": garbage.text},
                                             {"role": "user", "content": "Line 1 is not an event. Write the week again."}),
                        original.sampling, original.constraint)
    with serve() as url:
        [fixed] = backend(url, structured_output="text").complete([repair])
    assert events_of(fixed.text) == expected(5)


def test_api_key_comes_from_the_named_variable(monkeypatch):
    monkeypatch.delenv("BGEN_TEST_NO_SUCH_KEY", raising=False)
    remote = BackendConfig(kind="openai", base_url="https://llm.example.invalid/v1", api_key_env="BGEN_TEST_NO_SUCH_KEY")
    with pytest.raises(ValueError, match="BGEN_TEST_NO_SUCH_KEY"):
        OpenAIBackend(remote)
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:11434/v1", "http://[::1]:8000/v1"):
        assert resolve_api_key(BackendConfig(base_url=url, api_key_env="BGEN_TEST_NO_SUCH_KEY")) == PLACEHOLDER_KEY
    monkeypatch.setenv("BGEN_TEST_NO_SUCH_KEY", "sk-from-env")
    assert resolve_api_key(remote) == "sk-from-env"


def test_complete_works_inside_a_running_event_loop():
    with serve() as url:
        client = backend(url)

        async def caller():
            return client.complete([request(1), request(2)])

        responses = asyncio.run(caller())
    assert [events_of(r.text) for r in responses] == [expected(1), expected(2)]
    assert client.complete([]) == []
