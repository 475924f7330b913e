"""Throughput of the `openai` backend against the loopback server.

With a server that takes `latency_s` to answer each request and `concurrency` requests in
flight, an ideal client completes `concurrency / latency_s` requests a second; `efficiency` is
the fraction of that the backend reaches (client + SDK + event-loop overhead shows up as < 1).

    python -m bgen_assets.bench_llm_client --concurrency 32 --latency 0.2 --requests 640
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bgen_assets.llm import BackendConfig, EventVocabulary, LLMRequest, Sampling

VOCABULARY = EventVocabulary({"Home": ("Rest",), "Office": ("Work",), "Gym": ("Sport",)})


def _requests(n: int) -> list[LLMRequest]:
    places = [("Home", "Rest"), ("Office", "Work"), ("Gym", "Sport")]
    out = []
    for i in range(n):
        location, intent = places[i % 3]
        week = f"[{i % 7}, {i % 24:02d}:{i % 60:02d}, {location}, {intent}]"
        out.append(LLMRequest(messages=({"role": "system", "content": "Answer with event lines only."},
                                        {"role": "user", "content": f"Request {i}. Repeat this week:\n{week}"}),
                              sampling=Sampling(max_tokens=64, seed=i), constraint=VOCABULARY))
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def client_throughput(concurrency: int = 32, latency_s: float = 0.2, requests: int = 640,
                      structured_output: str = "auto") -> dict:
    """Serve the loopback server with `latency_s` and time `OpenAIBackend.complete` on `requests`
    short requests at `concurrency`; requests/s, the ideal, efficiency and p50/p95 latency."""
    import openai  # noqa: F401  (import cost is not part of the measurement)

    from bgen_assets.llm.loopback_server import serve, stats
    from bgen_assets.llm.openai_backend import OpenAIBackend

    batch = _requests(requests)
    with serve(latency_s=latency_s) as base_url:
        backend = OpenAIBackend(BackendConfig(kind="openai", model="loopback-echo", base_url=base_url,
                                              concurrency=concurrency, timeout_s=30, max_retries=2,
                                              structured_output=structured_output))
        backend.complete(batch[:min(concurrency, requests)])          # warm-up: imports, first schema
        server_before = stats(base_url)
        started = time.perf_counter()
        responses = backend.complete(batch)
        elapsed = time.perf_counter() - started
        server_after = stats(base_url)
    errors = sum(1 for r in responses if r.error)
    latencies = [r.latency_s for r in responses if not r.error]
    rate = requests / elapsed
    ideal = concurrency / latency_s
    return {
        "requests": requests, "concurrency": concurrency, "latency_s": latency_s,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(rate, 1),
        "ideal_requests_per_s": round(ideal, 1),
        "efficiency": round(rate / ideal, 3),
        "p50_latency_s": round(statistics.median(latencies), 4) if latencies else None,
        "p95_latency_s": round(_percentile(latencies, 0.95), 4) if latencies else None,
        "errors": errors,
        "transport_retries": sum(r.transport_retries for r in responses),
        "server_max_in_flight": server_after["max_in_flight"],
        "server_chat_requests": server_after["chat_requests"] - server_before["chat_requests"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--structured-output", default="auto", choices=["auto", "json_schema", "text"])
    args = parser.parse_args(argv)
    print(json.dumps(client_throughput(args.concurrency, args.latency, args.requests, args.structured_output),
                     indent=2))


if __name__ == "__main__":
    main()
