"""BehaviorLoRA: the bundled SmolLM2 fine-tuned with LoRA (peft) on text-formatted real weeks, the
GPU option of the fine-tuned generator ("Beyond Believability": fine-tuning on real behaviour,
optionally with short reasoning text, beats prompting).

A training example is one population user's consecutive real weeks (w, w + 1) as a chat: the
BehaviorGen prompt (profile, real week w, target; no role or format block, the model learns the
format) and the answer week w + 1 in BehaviorGen's line format. With `rationale: true` the answer
starts with one short line summarising the week (most frequent intents, busiest day); generation
then writes that line freely before the grammar-constrained week.

Fitting needs CUDA; without it, it refuses unless `allow_cpu` is declared (tiny smoke runs). The
fitted model is the adapter's weights (safetensors) with its settings, one row of DS.NAME_model;
generation merges it into the base once per model content under the model cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from bgen_assets.domain import PROFILE_ATTRIBUTES, week_of
from bgen_assets.generators import artifact_bytes, artifact_table, thin
from bgen_assets.generators.contract import LOG_DEFAULTS, GenerationContext, GeneratorKind, WeekResult, WeekTask
from bgen_assets.generators.behaviorgen import BehaviorGenParams, build_messages
from bgen_assets.llm import BackendConfig, EventVocabulary, LLMRequest, Sampling
from bgen_assets.llm.event_format import parse_week, render_events, to_events

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The BehaviorGen prompt without role and format blocks: the fine-tuned model learns the format.
PROMPT = BehaviorGenParams(prompt={"role": False, "format": False})


@dataclass(config=ConfigDict(extra="forbid", frozen=True))
class BehaviorLoRAConfig:
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    max_events_per_week: int = Field(40, ge=1, description="longer weeks are thinned (seeded) to this many events")
    max_training_pairs: int | None = Field(None, ge=1, description="seeded sample of week pairs (None: all)")
    rationale: bool = False
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    generation_batch_size: int = Field(16, ge=1)
    allow_cpu: bool = Field(False, description="fit without CUDA (tiny smoke runs only)")
    threads: int | None = None


def rationale_line(week: pd.DataFrame) -> str:
    """A short summary of a week, written before it when `rationale` is on."""
    intents = ", ".join(intent for intent, _ in Counter(week["intent"]).most_common(2))
    busiest = WEEKDAYS[int(week["weekday"].mode().iloc[0])]
    return f"Rationale: {len(week)} events, mostly {intents}; busiest on {busiest}."


def prompt_messages(task: WeekTask, context: GenerationContext, shown: pd.DataFrame) -> list[dict]:
    return list(build_messages(task, PROMPT, context, shown, len(shown)))


def training_chats(events: pd.DataFrame, config: BehaviorLoRAConfig,
                   rng: np.random.Generator) -> list[tuple[list[dict], str]]:
    """(prompt messages, answer) for every population user-week followed by a week with events."""
    events = events.assign(week=week_of(events["ts"]))
    pairs = events.groupby("location")["intent"].unique()
    context = GenerationContext("", "", 0, EventVocabulary({loc: tuple(i) for loc, i in pairs.items()}), Path(), Path())
    chats = []
    for user, user_events in events.groupby("user_id", sort=True):
        weeks = {week: thin(frame, config.max_events_per_week, rng) for week, frame in user_events.groupby("week")}
        profile = user_events.iloc[0][PROFILE_ATTRIBUTES].to_dict()
        for week, shown in weeks.items():
            following = weeks.get((pd.Timestamp(week) + pd.Timedelta(days=7)).strftime("%Y-%m-%d"))
            if following is None:
                continue
            task = WeekTask(user, week, user_events[user_events["week"] <= week], profile, [])
            answer = render_events(following)
            chats.append((prompt_messages(task, context, shown),
                          f"{rationale_line(following)}\n{answer}" if config.rationale else answer))
    if config.max_training_pairs is not None and len(chats) > config.max_training_pairs:
        chats = [chats[i] for i in sorted(rng.choice(len(chats), config.max_training_pairs, replace=False))]
    return chats


def base_model_dir(model_dir: Path) -> Path:
    """The bundled SmolLM2, converted once under the model cache."""
    from bgen_assets.llm.local_hf import convert_bundled

    return convert_bundled(model_dir)


def encode(tokenizer, messages: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end of turn, and labels that cover only the answer."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def fit(population_events: pd.DataFrame, config: BehaviorLoRAConfig, seed: int, model_dir: Path) -> pd.DataFrame:
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not torch.cuda.is_available() and not config.allow_cpu:
        raise RuntimeError("behavior_lora fine-tunes SmolLM2 and needs a CUDA GPU; none is available "
                           "(declare `allow_cpu: true` for a tiny CPU smoke run)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base = base_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    model = get_peft_model(model, LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), task_type="CAUSAL_LM"))
    examples = [encode(tokenizer, messages, answer) for messages, answer in training_chats(population_events, config, rng)]
    if not examples:
        raise ValueError("no population user has two consecutive weeks with events to train on")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    started, losses = time.perf_counter(), []
    for _ in range(config.epochs):
        epoch_loss = []
        order = rng.permutation(len(examples))
        for start in range(0, len(order), config.batch_size):
            batch = [examples[i] for i in order[start:start + config.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=device)
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=device)
            attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=device)
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss.append(loss.item())
        losses.append(round(float(np.mean(epoch_loss)), 4))
    adapter = {name: tensor.detach().cpu().contiguous() for name, tensor in get_peft_model_state_dict(model).items()}
    settings = {"config": asdict(config), "training_pairs": len(examples), "epoch_losses": losses,
                "train_seconds": round(time.perf_counter() - started, 1), "device": device,
                "trainable_parameters": sum(t.numel() for t in adapter.values())}
    return artifact_table(save(adapter)).assign(settings=json.dumps(settings))


class Fitted:
    def __init__(self, table: pd.DataFrame):
        settings = json.loads(table["settings"].iloc[0])
        self.config = BehaviorLoRAConfig(**settings["config"])
        self.settings = settings
        self.adapter = artifact_bytes(table)

    def merged_dir(self, cache_dir: Path) -> Path:
        """The base model with this adapter merged in, saved once per adapter content."""
        import torch
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load
        from transformers import AutoModelForCausalLM, AutoTokenizer

        target = Path(cache_dir) / f"behavior_lora-{hashlib.sha256(self.adapter).hexdigest()[:16]}"
        if (target / "config.json").is_file():
            return target
        base = base_model_dir(cache_dir)
        config = self.config
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules), task_type="CAUSAL_LM"))
        set_peft_model_state_dict(model, load(self.adapter))
        tmp = target.with_name(f".{target.name}-{time.time_ns()}")
        model.merge_and_unload().save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        tmp.rename(target)
        return target


def from_table(table: pd.DataFrame) -> Fitted:
    return Fitted(table)


def model_metadata(fitted: Fitted) -> dict:
    keys = ("trainable_parameters", "training_pairs", "train_seconds", "device")
    return {**{key: fitted.settings[key] for key in keys}, "final_loss": fitted.settings["epoch_losses"][-1]}


def _seed(task: WeekTask, stage: int) -> int:
    return int(np.random.default_rng([*task.seed, stage]).integers(0, 2**31 - 1))


def generate_weeks(fitted: Fitted, tasks: list[WeekTask], context: GenerationContext) -> list[WeekResult]:
    """One grammar-constrained answer per task (after a free rationale line when trained with one)."""
    from bgen_assets.llm.local_hf import LocalHFBackend

    config = fitted.config
    backend = LocalHFBackend(BackendConfig(model=str(fitted.merged_dir(context.model_dir)),
                                           batch_size=config.generation_batch_size, threads=config.threads),
                             context.model_dir)
    tokenizer = backend.tokenizer
    shown = [thin(t.history[t.history["week"] == t.week], config.max_events_per_week, np.random.default_rng([*t.seed, 0]))
             for t in tasks]
    prompts = [tokenizer.apply_chat_template(prompt_messages(t, context, s), tokenize=False, add_generation_prompt=True)
               for t, s in zip(tasks, shown)]
    budget = [min(16 * (config.max_events_per_week + 2), 24 * (len(s) + 4)) for s in shown]
    if config.rationale:  # a free first line, then the constrained week after it
        free = [LLMRequest((), Sampling(config.temperature, config.top_p, 40, _seed(t, 1)), None) for t in tasks]
        lines = [r.text.strip().splitlines()[0] if r.text.strip() else "" for r in backend.complete_rendered(free, prompts)]
        prompts = [f"{p}{line}\n" for p, line in zip(prompts, lines)]
    requests = [LLMRequest((), Sampling(config.temperature, config.top_p, b, _seed(t, 2)), context.vocabulary)
                for t, b in zip(tasks, budget)]
    results = []
    for task, response in zip(tasks, backend.complete_rendered(requests, prompts)):
        parsed = parse_week(response.text, context.vocabulary)
        log = {**LOG_DEFAULTS, "pass_at_1": parsed.valid, "attempts": 1, "llm_calls": 1,
               "prompt_tokens": response.prompt_tokens, "completion_tokens": response.completion_tokens,
               "billed_prompt_tokens": response.prompt_tokens, "billed_completion_tokens": response.completion_tokens,
               "latency_s": response.latency_s, "errors": "; ".join(parsed.errors[:5])}
        target = pd.Timestamp(task.week) + pd.Timedelta(days=7)
        results.append(WeekResult(to_events(parsed.events, target, context.slot_minutes),
                                  "ok" if parsed.valid else "failed", log))
    return results


class BehaviorLoRA(GeneratorKind):
    Params = BehaviorLoRAConfig
    needs_vocabulary = True
    needs_profiles = True

    def code_files(self) -> list[Path]:
        llm = Path(__file__).parent.parent / "llm"
        return [Path(__file__), llm / "event_format.py", llm / "grammar.py", llm / "local_hf.py"]

    def fit(self, population_events: pd.DataFrame, params: BehaviorLoRAConfig, seed: int,
            context: GenerationContext) -> pd.DataFrame:
        return fit(population_events, params, seed, context.model_dir)

    def from_table(self, table: pd.DataFrame) -> Fitted:
        return from_table(table)

    def model_metadata(self, model: Fitted) -> dict:
        return model_metadata(model)

    def generate_weeks(self, model: Fitted, tasks: list[WeekTask], params: BehaviorLoRAConfig,
                       context: GenerationContext) -> list[WeekResult]:
        return generate_weeks(model, tasks, context)


KIND = BehaviorLoRA()
