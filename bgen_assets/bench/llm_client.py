"""Throughput of the `openai` backend against the loopback server.

With a server that takes `latency_s` to answer each request and `concurrency` requests in
flight, an ideal client completes `concurrency / latency_s` requests a second; `efficiency` is
the fraction of that the backend reaches (client + SDK + event-loop overhead shows up as < 1).

    python -m bgen_assets.bench.llm_client --concurrency 32 --latency 0.2 --requests 640
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


def client_throughput(concurrency: int = 32, latency_s: float = 0.2, requests: int = 640, *,
                      structured_output: str = "auto", server: str = "process", repeats: int = 3) -> dict:
    """Serve the loopback server with `latency_s` and time `OpenAIBackend.complete` on `requests`
    short requests at `concurrency`: requests/s, the ideal (`concurrency / latency_s`), efficiency
    (the fraction of the ideal) and p50/p95 per-request latency.

    `server="process"` (default) runs the server in a child process, so the figure is the
    client's own (the server does not share its GIL); `"thread"` runs it in this process.
    The batch runs `repeats` times on one server after a warm-up; the figures are those of
    the median run, and `efficiency_runs` lists every run's."""
    import openai  # noqa: F401  (import cost is not part of the measurement)

    from bgen_assets.testing.loopback_server import serve, stats
    from bgen_assets.llm.openai_backend import OpenAIBackend

    if server not in ("process", "thread"):
        raise ValueError("server must be 'process' or 'thread'")
    batch = _requests(requests)
    runs = []
    with serve(latency_s=latency_s, process=server == "process") as base_url:
        backend = OpenAIBackend(BackendConfig(kind="openai", model="loopback-echo", base_url=base_url,
                                              concurrency=concurrency, timeout_s=30, max_retries=2,
                                              structured_output=structured_output))
        backend.complete(batch[:min(concurrency, requests)])          # warm-up: imports, first schema
        for _ in range(max(1, repeats)):
            before = stats(base_url)["chat_requests"]
            started = time.perf_counter()
            responses = backend.complete(batch)
            elapsed = time.perf_counter() - started
            after = stats(base_url)
            runs.append((elapsed, responses, after["chat_requests"] - before, after["max_in_flight"]))
    elapsed, responses, served, max_in_flight = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    errors = sum(1 for r in responses if r.error)
    latencies = [r.latency_s for r in responses if not r.error]
    ideal = concurrency / latency_s
    return {
        "requests": requests, "concurrency": concurrency, "latency_s": latency_s, "server": server,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(requests / elapsed, 1),
        "ideal_requests_per_s": round(ideal, 1),
        "efficiency": round(requests / elapsed / ideal, 3),
        "efficiency_runs": [round(requests / run[0] / ideal, 3) for run in runs],
        "p50_latency_s": round(statistics.median(latencies), 4) if latencies else None,
        "p95_latency_s": round(_percentile(latencies, 0.95), 4) if latencies else None,
        "errors": errors,
        "transport_retries": sum(r.transport_retries for r in responses),
        "server_chat_requests": served,
        "server_max_in_flight": max_in_flight,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--structured-output", default="auto", choices=["auto", "json_schema", "text"])
    parser.add_argument("--server", default="process", choices=["process", "thread"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(client_throughput(args.concurrency, args.latency, args.requests,
                                       structured_output=args.structured_output, server=args.server,
                                       repeats=args.repeats), indent=2))


if __name__ == "__main__":
    main()
