"""`openai` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp, ...).

`complete()` is synchronous for its callers; inside, it runs one event loop and one
`openai.AsyncOpenAI` client per call, with at most `config.concurrency` requests in flight.
The SDK's own retries are off (`max_retries=0`); this module retries, so that every retry is
counted in `LLMResponse.transport_retries`:

* retried: HTTP 408/409/429/5xx, timeouts, connection errors, and bodies that are not a chat
  completion (broken JSON, no `choices`); `Retry-After` / `retry-after-ms` is honoured when sent,
  otherwise exponential backoff with jitter; at most `config.max_retries` retries a request;
* not retried: other HTTP 4xx (bad request, auth, unknown model) -- the response comes back
  with `error` set. One bad request never raises, and no message carries the API key.
* content is not judged here: a cut-off answer comes back with `finish_reason="length"`, and
  text that is not event lines comes back as it is, for the caller to validate.

Structured output (`config.structured_output`): `json_schema` always sends the week's JSON
schema as `response_format` when a request has a constraint; `text` never does; `auto` sends
it until the server rejects `response_format` (HTTP 400 naming it), then falls back to plain
text for that request and every later one of this backend (the prompt specifies the lines).

Tuning via `config.options`: `backoff_s` (first backoff, default 0.5), `backoff_max_s` (20),
`retry_after_max_s` (longest Retry-After honoured, 120), `max_tokens_param` (`max_tokens`, or
`max_completion_tokens` for OpenAI reasoning models).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import re
import threading
import time
from urllib.parse import urlsplit

from bgen_assets.llm import BackendConfig, LLMRequest, LLMResponse

PLACEHOLDER_KEY = "sk-loopback-no-key"
RETRY_STATUSES = {408, 409, 429}
STRUCTURED_MODES = ("json_schema", "text", "auto")
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9])[A-Za-z0-9_\-*.]{6,}")


def is_loopback(base_url: str | None) -> bool:
    if not base_url:
        return False
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(config: BackendConfig) -> str:
    """The key from the variable named by `config.api_key_env`; a placeholder for loopback servers."""
    key = os.environ.get(config.api_key_env, "").strip() if config.api_key_env else ""
    if key:
        return key
    if is_loopback(config.base_url):
        return PLACEHOLDER_KEY
    where = config.base_url or "the OpenAI API"
    raise ValueError(f"backend 'openai' ({where}): the environment variable {config.api_key_env!r} "
                     "that should hold the API key is not set (the project file names the variable, "
                     "never the key)")


class _Retry(Exception):
    """A failed attempt worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Fail(Exception):
    """A failed attempt not worth retrying."""


class _FormatRejected(Exception):
    """The server refused `response_format`."""


def _retry_after(headers) -> float | None:
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            try:  # an HTTP date
                from email.utils import parsedate_to_datetime

                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError):
                continue
        if seconds == seconds and seconds >= 0:  # not NaN
            return seconds
    return None


def _status_message(exc) -> str:
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        message = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else body.get("message")
    return str(message or getattr(exc, "message", "") or exc)[:300]


class OpenAIBackend:
    name = "openai"

    def __init__(self, config: BackendConfig):
        if config.structured_output not in STRUCTURED_MODES:
            raise ValueError(f"backend 'openai': structured_output must be one of {STRUCTURED_MODES}, "
                             f"not {config.structured_output!r}")
        if config.concurrency < 1:
            raise ValueError("backend 'openai': concurrency must be at least 1")
        self.config = config
        self.model = config.model
        self._api_key = resolve_api_key(config)
        options = config.options or {}
        self._backoff_s = float(options.get("backoff_s", 0.5))
        self._backoff_max_s = float(options.get("backoff_max_s", 20.0))
        self._retry_after_max_s = float(options.get("retry_after_max_s", 120.0))
        self._max_tokens_param = str(options.get("max_tokens_param", "max_tokens"))
        self._format_rejected = False   # `auto` fell back to text; sticky for this backend
        self._schemas: dict = {}

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.config.base_url!r})"

    # -- public ----------------------------------------------------------------------------------

    def complete(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        requests = list(requests)
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._complete_all(requests))
        # called from inside an event loop (a notebook, an async caller): run ours in a thread
        result: list = []

        def run():
            result.append(asyncio.run(self._complete_all(requests)))

        thread = threading.Thread(target=run, name="openai-backend")
        thread.start()
        thread.join()
        return result[0]

    # -- internals -------------------------------------------------------------------------------

    def _client(self):
        import openai

        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.config.base_url, max_retries=0,
                                  timeout=self.config.timeout_s)

    async def _complete_all(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        semaphore = asyncio.Semaphore(self.config.concurrency)
        client = self._client()
        try:
            return list(await asyncio.gather(*(self._one(client, semaphore, r) for r in requests)))
        finally:
            await client.close()

    def _redact(self, text: str) -> str:
        if self._api_key and self._api_key != PLACEHOLDER_KEY:
            text = text.replace(self._api_key, "***")
        return _KEYLIKE.sub(r"\1***", text)

    def _backoff(self, retry: int) -> float:
        ceiling = min(self._backoff_max_s, self._backoff_s * (2 ** retry))
        return ceiling / 2 + random.uniform(0, ceiling / 2)   # "equal jitter"

    def _response_format(self, request: LLMRequest) -> dict | None:
        mode = self.config.structured_output
        if request.constraint is None or mode == "text" or (mode == "auto" and self._format_rejected):
            return None
        key = id(request.constraint)
        cached = self._schemas.get(key)
        if cached is None or cached[0] is not request.constraint:
            from bgen_assets.llm.event_format import json_schema

            cached = (request.constraint, {"type": "json_schema", "json_schema": {
                "name": "week", "schema": json_schema(request.constraint), "strict": True}})
            self._schemas[key] = cached
        return cached[1]

    async def _one(self, client, semaphore: asyncio.Semaphore, request: LLMRequest) -> LLMResponse:
        async with semaphore:
            started = time.perf_counter()
            retries = 0
            while True:
                response_format = self._response_format(request)
                try:
                    response = await self._attempt(client, request, response_format)
                except _FormatRejected:
                    if self.config.structured_output == "auto":
                        self._format_rejected = True   # and ask again, as text; not a transport retry
                        continue
                    return self._failed(request, started, retries,
                                        "the server rejected response_format (structured_output: json_schema); "
                                        "use structured_output: auto or text for this endpoint")
                except _Fail as exc:
                    return self._failed(request, started, retries, str(exc))
                except _Retry as exc:
                    if retries >= self.config.max_retries:
                        return self._failed(request, started, retries,
                                            f"gave up after {retries} retries: {exc}")
                    if exc.retry_after is not None:
                        delay = min(exc.retry_after, self._retry_after_max_s)
                    else:
                        delay = self._backoff(retries)
                    retries += 1
                    await asyncio.sleep(delay)
                    continue
                response.transport_retries = retries
                response.latency_s = time.perf_counter() - started
                return response

    def _failed(self, request: LLMRequest, started: float, retries: int, message: str) -> LLMResponse:
        return LLMResponse(text="", prompt_tokens=0, completion_tokens=0,
                           latency_s=time.perf_counter() - started, finish_reason="error",
                           transport_retries=retries, error=self._redact(f"openai backend: {message}"))

    async def _attempt(self, client, request: LLMRequest, response_format: dict | None) -> LLMResponse:
        import openai
        from openai.types.chat import ChatCompletion

        sampling = request.sampling
        kwargs = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            self._max_tokens_param: sampling.max_tokens,
            "seed": sampling.seed,
        }
        if response_format is not None:
            kwargs["response_format"] = response_format
        try:
            # `post` rather than `chat.completions.create`: the same request, minus the SDK's
            # recursive param transform, which costs ~1-3 ms CPU per request (most of it walking
            # the JSON schema) and is the client's throughput bottleneck at high concurrency.
            completion = await client.post("/chat/completions", cast_to=ChatCompletion, body=kwargs)
        except openai.APITimeoutError as exc:
            raise _Retry(f"timed out after {self.config.timeout_s:g} s") from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__
            raise _Retry(f"connection error: {type(cause).__name__ if cause else exc}") from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            message = _status_message(exc)
            if status in RETRY_STATUSES or status >= 500:
                raise _Retry(f"HTTP {status}: {message}", _retry_after(exc.response.headers)) from exc
            if (status in (400, 422) and response_format is not None
                    and re.search(r"response[_ ]?format|json[_ ]?schema|structured", message, re.I)):
                raise _FormatRejected(message) from exc
            raise _Fail(f"HTTP {status}: {message}") from exc
        except openai.APIResponseValidationError as exc:
            raise _Retry(f"response is not a chat completion: {exc}") from exc
        except ValueError as exc:   # a body that is not JSON (json.JSONDecodeError)
            raise _Retry(f"unparsable response body: {type(exc).__name__}") from exc

        choices = getattr(completion, "choices", None)
        if not choices:
            raise _Retry(f"response is not a chat completion (no choices; got {type(completion).__name__})")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise _Retry("response is not a chat completion (a choice without a message)")
        text = message.content or ""
        usage = getattr(completion, "usage", None)
        return LLMResponse(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_s=0.0,
            finish_reason=str(getattr(choice, "finish_reason", None) or "stop"),
        )
