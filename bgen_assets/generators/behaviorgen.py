"""BehaviorGen: an LLM writes the next week of a user's behaviour from the user's profile and
one segment of the user's real events (paper section 4.1).

The prompt is assembled from the templates in prompts/behaviorgen/; each component (role,
profile, format restrictions, segmentation) is switched by the declaration, so the paper's
ablation variants are declarations. Answers are parsed and validated against the dataset's
vocabulary, re-asked a bounded number of times when invalid, and cached by content.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bgen_assets.config import PROJECT_ROOT
from bgen_assets.llm import BackendConfig, LLMRequest, Sampling
from bgen_assets.generators import thin
from bgen_assets.generators.contract import LOG_DEFAULTS, GenerationContext, GeneratorKind, WeekResult, WeekTask
from bgen_assets.llm import EventVocabulary
from bgen_assets.llm.event_format import ParsedWeek, line_name, parse_week, parse_weeks, render_events, to_events

PROMPTS = PROJECT_ROOT / "prompts"
CONDITIONING_DAYS = {"1d": 1, "3d": 3, "7d": 7, "10d": 10}
# The answer budget: room for about the real week's number of lines. Small models rarely stop on
# their own, and the constrained decoder ends the answer at a line boundary when the budget runs out.
TOKENS_PER_EVENT_LINE = 18  # SmolLM2 tokens of a Tokyo line, rounded up (see `make bench`)
MAX_TOKENS_PER_REQUEST = 6000  # SmolLM2 reads 8k tokens: prompt and answer must fit


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptComponents(Strict):
    """Each one can be switched off (the paper's ablation); segmentation is one week per request."""

    segment: bool = True             # one week per request; False: a user's whole horizon in one request
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

    @model_validator(mode="after")
    def _known_backend_fields(self) -> BehaviorGenParams:
        self.backend_config  # unknown backend fields fail here, at declaration load
        return self

    @property
    def backend_config(self) -> BackendConfig:
        return BackendConfig(**self.backend)


@cache
def _templates() -> Environment:
    return Environment(loader=FileSystemLoader(PROMPTS), undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_template(name: str, **values) -> str:
    """A template of prompts/ (names relative to it, e.g. `behaviorgen/format.j2`)."""
    return _templates().get_template(name).render(**values).strip()


def _render(name: str, **values) -> str:
    return render_template(f"behaviorgen/{name}", **values)


def conditioning_events(history: pd.DataFrame, week: str, conditioning: str) -> pd.DataFrame:
    """The real events shown to the model: a window ending with the conditioning week."""
    week_events = history[history["week"] == week]
    if conditioning == "1_record":
        return week_events.tail(1)
    week_end = pd.Timestamp(week) + pd.Timedelta(days=7)
    start = week_end - pd.Timedelta(days=CONDITIONING_DAYS[conditioning])
    window = history[(history["ts"] >= start) & (history["ts"] < week_end)]
    return window if len(window) else week_events.tail(1)


def usual_locations(history: pd.DataFrame, limit: int = 16) -> list[str]:
    """The user's most visited locations (ties by name), each as `location (intent)` with the
    user's most frequent intent there. Only the user's own events: another user's edit must not
    change this user's prompt, hence its input version and cache key."""
    counts = Counter(zip(history["location"], history["intent"]))  # one per prompt: cheaper than a groupby
    usual: dict[str, str] = {}  # location -> its most frequent intent, most visited first
    for location, intent in sorted(counts, key=lambda pair: (-counts[pair], pair)):
        usual.setdefault(location, intent)
    return [f"{line_name(location)} ({line_name(intent)})" for location, intent in usual.items()][:limit]


def build_messages(task, params: BehaviorGenParams, context, shown: pd.DataFrame, n_events: int,
                   n_weeks: int = 1) -> tuple[dict, ...]:
    components = params.prompt
    parts = []
    if components.profile:
        parts.append(_render("profile.j2", profile=task.profile))
    label = "last week" if components.conditioning == "7d" else f"last {components.conditioning} before next week"
    parts.append(_render("history.j2", conditioning_label=label, history_lines=render_events(shown)))
    if components.format:
        parts.append(_render("format.j2", intents=context.vocabulary.intents, example_locations=usual_locations(task.history)))
    target_monday = (pd.Timestamp(task.week) + pd.Timedelta(days=7)).strftime("%Y-%m-%d")
    parts.append(_render("target.j2", target_monday=target_monday, n_events=n_events, n_weeks=n_weeks))
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

        backend = LocalHFBackend(config, context.model_dir)
    else:
        raise ValueError(f"unknown backend kind {config.kind!r} (hf_local or openai)")
    return CachedBackend(backend, context.state_dir / "cache" / "llm")


@dataclass
class Conversation:
    """One request to the model and its re-asks: one week, or a user's whole horizon when
    segmentation is off."""

    tasks: list[int]                 # indices of the WeekTasks it answers, in week order
    messages: list[dict]
    budget: int
    seed: list[int]
    weeks: list = field(default_factory=list)   # ParsedWeek per task, from the latest answer
    log: dict = field(default_factory=lambda: dict(LOG_DEFAULTS))

    @property
    def valid(self) -> bool:
        return bool(self.weeks) and all(week.valid for week in self.weeks)

    def record(self, response, attempt: int, vocabulary: EventVocabulary) -> None:
        log = self.log
        log["attempts"] += 1
        log["cache_hits" if response.cached else "llm_calls"] += 1
        for field_name in ("prompt_tokens", "completion_tokens"):
            log[field_name] += getattr(response, field_name)
            if not response.cached:
                log[f"billed_{field_name}"] += getattr(response, field_name)
        log["latency_s"] += response.latency_s
        log["transport_retries"] += response.transport_retries
        text = response.text if response.error is None else ""
        self.weeks = (parse_weeks(text, vocabulary, len(self.tasks)) if len(self.tasks) > 1
                      else [parse_week(text, vocabulary)])
        errors = list(dict.fromkeys(e for week in self.weeks for e in week.errors))
        if response.error is not None:
            errors.insert(0, f"backend gave up: {response.error}")
            self.weeks = [ParsedWeek(week.events, [errors[0], *week.errors]) for week in self.weeks]
        log["errors"] = "; ".join(errors[:5])
        if attempt == 0:
            log["pass_at_1"] = self.valid
        if not self.valid:
            self.messages += [{"role": "assistant", "content": response.text},
                              {"role": "user", "content": _render("repair.j2", errors=errors)}]


def conversations_for(tasks, params: BehaviorGenParams, context) -> list[Conversation]:
    """One conversation per task, or per user (all of that user's tasks) without segmentation."""
    groups: dict = {}
    for index, task in enumerate(tasks):
        groups.setdefault(index if params.prompt.segment else task.user, []).append(index)
    conversations = []
    for indices in groups.values():
        indices.sort(key=lambda i: tasks[i].week)
        first = tasks[indices[0]]
        rng = np.random.default_rng(first.seed)
        shown = thin(conditioning_events(first.history, first.week, params.prompt.conditioning),
                     params.max_events_per_week, rng)
        n_events = min(int((first.history["week"] == first.week).sum()), params.max_events_per_week)
        budget = min(params.sampling.max_tokens * len(indices), MAX_TOKENS_PER_REQUEST,
                     TOKENS_PER_EVENT_LINE * len(indices) * (n_events + 2))
        messages = list(build_messages(first, params, context, shown, n_events, len(indices)))
        conversations.append(Conversation(indices, messages, budget, first.seed))
    return conversations


def generate_weeks(tasks: list[WeekTask], params: BehaviorGenParams, context: GenerationContext,
                   backend=None) -> list[WeekResult]:
    """Each conversation's answers, re-asked up to `max_attempts` until they parse (backend: the
    declared one behind the cache, unless given)."""
    backend = backend or make_backend(params, context)
    constraint = context.vocabulary if params.prompt.format else None
    conversations = conversations_for(tasks, params, context)
    pending = conversations
    for attempt in range(params.max_attempts):
        if not pending:
            break
        requests = [LLMRequest(tuple(c.messages), Sampling(params.sampling.temperature, params.sampling.top_p,
                                                            c.budget, _seed(c.seed, attempt)), constraint)
                    for c in pending]
        for conversation, response in zip(pending, backend.complete(requests)):
            conversation.record(response, attempt, context.vocabulary)
        pending = [c for c in pending if not c.valid]
    results: list = [None] * len(tasks)
    for conversation in conversations:
        for index, week in zip(conversation.tasks, conversation.weeks):
            target_monday = pd.Timestamp(tasks[index].week) + pd.Timedelta(days=7)
            events = to_events(week.events if conversation.valid else week.events.iloc[0:0],
                               target_monday, context.slot_minutes)
            results[index] = WeekResult(events, "ok" if conversation.valid else "failed", dict(conversation.log))
    return results


class BehaviorGen(GeneratorKind):
    Params = BehaviorGenParams
    needs_vocabulary = True

    def code_files(self) -> list[Path]:
        llm = Path(__file__).parent.parent / "llm"  # by path: importing the grammar would load torch
        return [Path(__file__), llm / "event_format.py", llm / "grammar.py",
                *sorted((PROMPTS / "behaviorgen").glob("*.j2"))]

    def needs_fit(self, params: BehaviorGenParams) -> bool:
        return False

    def token_prices(self, params: BehaviorGenParams) -> tuple[float, float]:
        return params.prices.input_per_million, params.prices.output_per_million

    def generate_weeks(self, model: None, tasks: list[WeekTask], params: BehaviorGenParams,
                       context: GenerationContext) -> list[WeekResult]:
        return generate_weeks(tasks, params, context)


KIND = BehaviorGen()
