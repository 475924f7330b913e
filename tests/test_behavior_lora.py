"""BehaviorLoRA: refuses to fit without CUDA unless allowed; a tiny CPU smoke run (two week pairs,
short weeks) fits a reloadable adapter; the real path (fit, then valid seeded weeks) runs where CUDA exists."""

import pandas as pd
import pytest
import torch

from bgen_assets.config import load_project
from bgen_assets.assets.synthetic import stable_seed
from bgen_assets.generators import GenerationContext, WeekTask, load_generator_specs
from bgen_assets.generators import behavior_lora
from bgen_assets.llm import EventVocabulary

TINY = {"allow_cpu": True, "max_training_pairs": 2, "max_events_per_week": 4, "batch_size": 2, "lora_r": 2,
        "target_modules": ["q_proj"], "rationale": True, "threads": 2}


@pytest.fixture(scope="module")
def population(tokyo_events):
    events = tokyo_events[tokyo_events["user_id"].isin(["1032", "107", "1172"])]
    return events.assign(age_group="unknown", education="unknown", gender="unknown",
                         consumption_level="unknown", occupation="office worker")


def tasks_of(events, user, n_weeks, seed):
    history = events[events["user_id"] == user].assign(week=lambda e: (e["ts"].dt.normalize()
                                                      - pd.to_timedelta(e["ts"].dt.weekday, unit="D")).dt.strftime("%Y-%m-%d"))
    weeks = sorted(history["week"].unique())[:n_weeks]
    return [WeekTask(user, week, history[history["week"] <= week], {"occupation": "office worker"},
                     stable_seed(seed, "tokyo", user, week)) for week in weeks]


def context_of(events, tmp_path_factory):
    from bgen_assets.config import load_project

    pairs = events.groupby("location")["intent"].unique()
    return GenerationContext("tokyo", "", 30, EventVocabulary({loc: tuple(i) for loc, i in pairs.items()}),
                             tmp_path_factory.mktemp("state"), load_project().model_cache)


def test_the_declaration_builds_nothing_by_default_and_needs_cuda_to_fit(population):
    spec = next(s for s in load_generator_specs() if s.name == "behavior_lora")
    project = load_project(environ={})
    assert all(spec.selection(scope, dataset, project.selection(dataset, scope)).users == []
               for scope in project.scopes for dataset in project.datasets)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            behavior_lora.fit(population, spec.settings, 0, load_project().model_cache)


def test_tiny_cpu_smoke_fit_stores_a_reloadable_adapter(population):
    """Fit only: CPU generation with the 135M model takes minutes on a busy 2-core machine."""
    table = behavior_lora.fit(population, behavior_lora.BehaviorLoRAConfig(**TINY), 0, load_project().model_cache)
    assert list(table.columns) == ["payload", "settings"] and len(table) == 1
    fitted = behavior_lora.from_table(table)
    metadata = behavior_lora.model_metadata(fitted)
    assert metadata["training_pairs"] == 2 and metadata["device"] == "cpu" and metadata["trainable_parameters"] > 0
    assert fitted.config.rationale and fitted.settings["epoch_losses"][0] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="BehaviorLoRA's real path needs a CUDA GPU")
def test_gpu_fine_tuning_lowers_the_loss_and_passes_at_first_attempt(population, tmp_path_factory):
    spec = next(s for s in load_generator_specs() if s.name == "behavior_lora")
    params = {**spec.params, "epochs": 3}
    fitted = behavior_lora.from_table(behavior_lora.fit(population, behavior_lora.BehaviorLoRAConfig(**params), 0, load_project().model_cache))
    losses = fitted.settings["epoch_losses"]
    assert fitted.settings["device"] == "cuda" and losses[-1] < losses[0]
    tasks = tasks_of(population, "1172", 4, spec.seed)
    context = context_of(population, tmp_path_factory)
    results, again = (behavior_lora.generate_weeks(fitted, tasks, context) for _ in range(2))
    assert sum(r.log["pass_at_1"] for r in results) >= 3
    for result, repeat in zip(results, again):
        pd.testing.assert_frame_equal(result.events, repeat.events)
        assert set(zip(result.events["location"], result.events["intent"])) <= set(zip(population["location"],
                                                                                        population["intent"]))
