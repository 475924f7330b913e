"""Generator declarations (`models/generators/*.yml`) and the generator kinds that run them.

A generator kind implements `fit(population_events, params) -> model table` (or needs no
fit) and `generate(model, history, week, params, rng, slot_minutes) -> events of the week
after `week``, where `history` holds only the user's real events up to and including `week`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bgen_assets.config import MODELS_DIR, ConfigError


class GeneratorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["markov"]
    description: str = ""
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)


def load_generator_specs(folder: Path = MODELS_DIR / "generators") -> list[GeneratorSpec]:
    specs = []
    for path in sorted(folder.glob("*.yml")):
        raw = yaml.safe_load(path.read_text()) or {}
        try:
            specs.append(GeneratorSpec.model_validate({"name": path.stem, **raw}))
        except ValueError as exc:
            raise ConfigError(f"invalid generator declaration {path}: {exc}") from None
    return specs


def generator_kind(kind: str):
    from bgen_assets.generators import markov

    return {"markov": markov}[kind]
