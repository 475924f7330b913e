"""BehaviorGen: an LLM writes the next week of a user's behaviour from the user's profile and
one segment of the user's real events (paper section 4.1).

The prompt is assembled from the templates in prompts/behaviorgen/; each component (role,
profile, format restrictions, segmentation) is switched by the declaration, so the paper's
ablation variants are declarations. Answers are parsed and validated against the dataset's
vocabulary, re-asked a bounded number of times when invalid, and cached by content.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field

from bgen_assets.config import PROJECT_ROOT
from bgen_assets.llm import BackendConfig, LLMRequest, Sampling
from bgen_assets.llm.event_format import parse_week, render_events, to_events

NEEDS_FIT = False
PROMPTS = PROJECT_ROOT / "prompts" / "behaviorgen"
CONDITIONING_DAYS = {"1d": 1, "3d": 3, "7d": 7, "10d": 10}
TOKENS_PER_EVENT_LINE = 18  # SmolLM2 tokens of a Tokyo line, rounded up (see `make bench`)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptComponents(Strict):
    """Each one can be switched off (the paper's ablation); segmentation is one week per request."""

    role: bool = True                # "you are the Generator ..."
    profile: bool = True             # the five profile attributes
    format: bool = True              # strict schema + allowed values (+ constrained decoding / JSON schema)
    conditioning: Literal["1_record", "1d", "3d", "7d", "10d"] = "7d"  # real data shown (paper A.4)


class SamplingParams(Strict):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(900, gt=0)


class Prices(Strict):
    input_per_million: float = 0.0
    output_per_million: float = 0.0


class BehaviorGenParams(Strict):
    backend: dict = Field(default_factory=dict)   # fields of bgen_assets.llm.BackendConfig
    prompt: PromptComponents = PromptComponents()
    sampling: SamplingParams = SamplingParams()
    max_events_per_week: int = Field(40, gt=0, description="cap on events shown and asked for (dense datasets)")
    max_attempts: int = Field(2, ge=1, description="first answer + bounded re-asks")
    prices: Prices = Prices()

    @property
    def backend_config(self) -> BackendConfig:
        return BackendConfig(**self.backend)


def validate_params(params: dict) -> BehaviorGenParams:
    parsed = BehaviorGenParams.model_validate(params)
    BackendConfig(**parsed.backend)  # unknown backend fields fail here, at declaration load
    return parsed


@cache
def _templates() -> Environment:
    return Environment(loader=FileSystemLoader(PROMPTS), undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _render(name: str, **values) -> str:
    return _templates().get_template(name).render(**values).strip()


def conditioning_events(history: pd.DataFrame, week: str, conditioning: str) -> pd.DataFrame:
    """The real events shown to the model: a window ending with the conditioning week."""
    week_events = history[history["week"] == week]
    if conditioning == "1_record":
        return week_events.tail(1)
    week_end = pd.Timestamp(week) + pd.Timedelta(days=7)
    start = week_end - pd.Timedelta(days=CONDITIONING_DAYS[conditioning])
    window = history[(history["ts"] >= start) & (history["ts"] < week_end)]
    return window if len(window) else week_events.tail(1)


def thin(events: pd.DataFrame, limit: int, rng: np.random.Generator) -> pd.DataFrame:
    """At most `limit` events, a uniform sample kept in time order."""
    if len(events) <= limit:
        return events
    return events.iloc[np.sort(rng.choice(len(events), size=limit, replace=False))]


def build_messages(task, params: BehaviorGenParams, context, shown: pd.DataFrame, n_events: int) -> tuple[dict, ...]:
    components = params.prompt
    user_locations = task.history["location"].value_counts().index[:12].tolist()
    examples = list(dict.fromkeys(user_locations + context.popular_locations))[:16]
    intents_of = context.vocabulary.intents_by_location
    parts = []
    if components.profile:
        parts.append(_render("profile.j2", profile=task.profile))
    label = "last week" if components.conditioning == "7d" else f"last {components.conditioning} before next week"
    parts.append(_render("history.j2", conditioning_label=label, history_lines=render_events(shown)))
    if components.format:
        parts.append(_render("format.j2", intents=context.vocabulary.intents,
                             example_locations=[f"{loc} ({intents_of[loc][0]})" for loc in examples if loc in intents_of]))
    target_monday = (pd.Timestamp(task.week) + pd.Timedelta(days=7)).strftime("%Y-%m-%d")
    parts.append(_render("target.j2", target_monday=target_monday, n_events=n_events))
    messages = [{"role": "user", "content": "\n\n".join(p for p in parts if p)}]
    if components.role:
        messages.insert(0, {"role": "system", "content": _render("system.j2", dataset_description=context.description)})
    return tuple(messages)


def _seed(task_seed: list[int], attempt: int) -> int:
    return int(np.random.default_rng([*task_seed, attempt]).integers(0, 2**31 - 1))


def make_backend(params: BehaviorGenParams, context):
    """The declared backend behind the response cache; models load only when a call is needed."""
    from bgen_assets.llm.cache import CachedBackend

    config = params.backend_config
    if config.kind == "openai":
        from bgen_assets.llm.openai_backend import OpenAIBackend

        backend = OpenAIBackend(config)
    elif config.kind == "hf_local":
        from bgen_assets.llm.local_hf import LocalHFBackend

        backend = LocalHFBackend(config, context.state_dir / "models")
    else:
        raise ValueError(f"unknown backend kind {config.kind!r} (hf_local or openai)")
    return CachedBackend(backend, context.state_dir / "cache" / "llm")


def generate_weeks(model, tasks, spec, context, backend=None) -> list:
    from bgen_assets.generators import WeekResult

    params = validate_params(spec.params)
    backend = backend or make_backend(params, context)
    constraint = context.vocabulary if params.prompt.format else None
    conversations, budgets, logs = [], [], []
    for task in tasks:
        rng = np.random.default_rng(task.seed)
        shown = thin(conditioning_events(task.history, task.week, params.prompt.conditioning),
                     params.max_events_per_week, rng)
        n_events = min(int((task.history["week"] == task.week).sum()), params.max_events_per_week)
        conversations.append(list(build_messages(task, params, context, shown, n_events)))
        budgets.append(min(params.sampling.max_tokens, TOKENS_PER_EVENT_LINE * (n_events * 3 // 2 + 4)))
        logs.append({"attempts": 0, "pass_at_1": False, "llm_calls": 0, "cache_hits": 0, "prompt_tokens": 0,
                     "completion_tokens": 0, "billed_prompt_tokens": 0, "billed_completion_tokens": 0,
                     "latency_s": 0.0, "transport_retries": 0, "errors": ""})
    parsed: list = [None] * len(tasks)
    pending = list(range(len(tasks)))
    for attempt in range(params.max_attempts):
        if not pending:
            break
        requests = [LLMRequest(tuple(conversations[i]), Sampling(
            params.sampling.temperature, params.sampling.top_p, budgets[i], _seed(tasks[i].seed, attempt)), constraint)
            for i in pending]
        responses = backend.complete(requests)
        for i, response in zip(pending, responses):
            log = logs[i]
            log["attempts"] += 1
            log["cache_hits" if response.cached else "llm_calls"] += 1
            log["prompt_tokens"] += response.prompt_tokens
            log["completion_tokens"] += response.completion_tokens
            if not response.cached:
                log["billed_prompt_tokens"] += response.prompt_tokens
                log["billed_completion_tokens"] += response.completion_tokens
            log["latency_s"] += response.latency_s
            log["transport_retries"] += response.transport_retries
            week = parse_week(response.text if response.error is None else "", context.vocabulary)
            if response.error is not None:
                week.errors.insert(0, f"backend gave up: {response.error}")
            parsed[i] = week
            log["errors"] = "; ".join(week.errors[:5])
            if attempt == 0:
                log["pass_at_1"] = week.valid
            if not week.valid:
                conversations[i] += [{"role": "assistant", "content": response.text},
                                     {"role": "user", "content": _render("repair.j2", errors=week.errors)}]
        pending = [i for i in pending if not parsed[i].valid]
    results = []
    for task, week, log in zip(tasks, parsed, logs):
        target_monday = pd.Timestamp(task.week) + pd.Timedelta(days=7)
        if week.valid:
            results.append(WeekResult(to_events(week.events, target_monday, context.slot_minutes), "ok", log))
        else:
            empty = to_events(week.events.iloc[0:0], target_monday, context.slot_minutes)
            results.append(WeekResult(empty, "failed", log))
    return results
