"""Generator benchmark: for every declared generator that is fitted or cheap (not the LLM-prompt
kind, not the GPU-only LoRA kind), fit on population users and generate the next week of each of
their user-weeks, with the wall time, the peak memory and the intent-distribution Jensen-Shannon
divergence (base 2, squared distance) of the generated weeks against those real next weeks.

Two scales on the Tokyo population users: `subset`, the first population users (in a seeded order)
holding about `SUBSET_WEEKS` user-weeks, where SDV PAR finishes; and `full`, all of them (SDV PAR
left out: its cost grows with about the square of the number of sequences). Each generator runs in
its own process (`python -m bgen_assets.bench.generator_fits NAME SCALE`), so its peak RSS is its own.
The generators are called through their kind functions (fit, from_table, generate_weeks), not Dagster.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from bgen_assets.assets.synthetic import generation_context, stable_seed
from bgen_assets.domain import PROFILE_ATTRIBUTES, week_of
from bgen_assets.config import project
from bgen_assets.generators import WeekTask, generator_kind, load_generator_specs
from bgen_assets.warehouse import Warehouse

DATASET = "tokyo"
SUBSET_WEEKS = 300
SKIPPED_KINDS = {"behaviorgen", "behavior_lora"}          # prompted LLM (see behaviorgen_pass_at_1), GPU only
FULL_SCALE_SKIPPED = {"sdv_par"}


def population(warehouse: Warehouse, scale: str) -> pd.DataFrame:
    """The scale's population users' events with their week and profile."""
    events = warehouse.query(
        f'SELECT e.*, {", ".join(f"p.{a}" for a in PROFILE_ATTRIBUTES)} FROM "{DATASET}".events e '
        f'JOIN "{DATASET}".user_split s USING (user_id) JOIN "{DATASET}".profiles p USING (user_id) '
        "WHERE s.role = 'population' ORDER BY user_id, ts")
    events["week"] = week_of(events["ts"])
    if scale == "subset":
        weeks = events.groupby("user_id")["week"].nunique()
        order = weeks.index[np.random.default_rng(0).permutation(len(weeks))]
        chosen = order[:int(np.searchsorted(weeks[order].cumsum().to_numpy(), SUBSET_WEEKS)) + 1]
        events = events[events["user_id"].isin(chosen)]
    return events.reset_index(drop=True)


def tasks_and_next_weeks(events: pd.DataFrame, seed: int) -> tuple[list[WeekTask], pd.DataFrame]:
    """A task per user-week whose next calendar week has real events, and those real events."""
    tasks, following = [], []
    for user, history in events.groupby("user_id"):
        weeks = set(history["week"])
        profile = history.iloc[0][PROFILE_ATTRIBUTES].to_dict()
        for week in sorted(weeks):
            target = (pd.Timestamp(week) + pd.Timedelta(days=7)).strftime("%Y-%m-%d")
            if target in weeks:
                tasks.append(WeekTask(user, week, history[history["week"] <= week], profile,
                                      stable_seed(seed, DATASET, user, week)))
                following.append(history[history["week"] == target])
    return tasks, pd.concat(following, ignore_index=True)


def intent_jsd(generated: pd.Series, real: pd.Series) -> float:
    intents = sorted(set(generated) | set(real))
    p = generated.value_counts().reindex(intents, fill_value=0).to_numpy(float)
    q = real.value_counts().reindex(intents, fill_value=0).to_numpy(float)
    return float(jensenshannon(p, q, base=2) ** 2) if p.sum() else 1.0


def measure(name: str, scale: str) -> dict:
    """Fit and generate one declared generator at one scale, in this process."""
    spec = next(s for s in load_generator_specs() if s.name == name)
    kind = generator_kind(spec.kind)
    warehouse = Warehouse.for_project(project())
    events = population(warehouse, scale)
    tasks, real = tasks_and_next_weeks(events, spec.seed)
    context = generation_context(project(), DATASET, warehouse)
    started = time.perf_counter()
    model = kind.from_table(kind.fit(events, spec.settings, spec.seed, context)) if spec.needs_fit else None
    fitted = time.perf_counter()
    results = kind.generate_weeks(model, tasks, spec.settings, context)
    done = time.perf_counter()
    generated = pd.concat([r.events for r in results if r.status == "ok"], ignore_index=True)
    return {
        "kind": spec.kind, "users": int(events["user_id"].nunique()), "training_user_weeks": int(events.groupby(["user_id", "week"]).ngroups),
        "generated_user_weeks": len(tasks), "fit_s": round(fitted - started, 2), "sample_s": round(done - fitted, 2),
        "fit_sample_s": round(done - started, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "intent_jsd": round(intent_jsd(generated["intent"], real["intent"]), 5),
        "events_per_week": round(len(generated) / max(len(tasks), 1), 2), "real_events_per_week": round(len(real) / max(len(tasks), 1), 2),
        **({"model": kind.model_metadata(model)} if model is not None else {}),
    }


def generator_benchmark(runner=None) -> dict:
    """Every benchmarked generator at both scales, each in its own process; the BehaviorGPT targets."""
    names = [s.name for s in load_generator_specs() if s.kind not in SKIPPED_KINDS]
    figures: dict = {}
    for scale in ("subset", "full"):
        for name in names:
            if scale == "full" and next(s.kind for s in load_generator_specs() if s.name == name) in FULL_SCALE_SKIPPED:
                continue
            run = subprocess.run([sys.executable, "-m", "bgen_assets.bench.generator_fits", name, scale],
                                 capture_output=True, text=True, check=False)
            figures.setdefault(scale, {})[name] = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 \
                else {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"}
            print(scale, name, figures[scale][name], flush=True)
    subset, full = figures["subset"], figures["full"]
    if "fit_sample_s" in subset.get("behavior_gpt", {}) and "fit_sample_s" in subset.get("sdv_par", {}):
        figures["behavior_gpt_over_sdv_par_time"] = round(subset["behavior_gpt"]["fit_sample_s"] / subset["sdv_par"]["fit_sample_s"], 3)
        figures["target_ratio_at_most"] = 0.2
    if "fit_sample_s" in full.get("behavior_gpt", {}):
        figures["behavior_gpt_full_population_s"] = full["behavior_gpt"]["fit_sample_s"]
        figures["target_full_population_s_at_most"] = 300
    figures["dataset"] = DATASET
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
