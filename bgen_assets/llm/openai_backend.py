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
it until the server rejects `response_format` (HTTP 400 naming it) or answers in plain text
anyway (as `transformers serve` does), then falls back to plain text for every later request of
this backend (the prompt specifies the lines, and the parser reads either form).

A request keeps its concurrency slot while it waits to retry (so a rate-limited server is not
hit harder), and its `latency_s` runs from taking the slot to the final answer, retries and
waits included. Requests go out through the SDK's generic `client.post("/chat/completions")`
with the body built here: the same HTTP, auth and error types as `chat.completions.create`,
without the SDK's per-request param transform and response model, which cost about as much
CPU as the HTTP transport itself and kept a 32-way client well below the server's pace.

Tuning via `config.options`: `backoff_s` (first backoff, default 0.5), `backoff_max_s` (20),
`retry_after_max_s` (longest Retry-After honoured, 120), `max_tokens_param` (`max_tokens`, or
`max_completion_tokens` for OpenAI reasoning models).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import os
import random
import re
import threading
import time
from urllib.parse import urlsplit

from bgen_assets.llm import BackendConfig, LLMRequest, LLMResponse, OnResponse

PLACEHOLDER_KEY = "sk-loopback-no-key"
RETRY_STATUSES = {408, 409, 429}
STRUCTURED_MODES = ("json_schema", "text", "auto")
ERROR_CHARACTERS = 300   # of an error message kept in the generation log
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
        if not math.isnan(seconds) and seconds >= 0:
            return seconds
    return None


def redact_key(text: str, key: str, shortest: int = 8) -> str:
    """`text` with the key, and every piece of it that starts like the key and is at least
    `shortest` characters long (a server may echo a cut key), replaced by ***."""
    if len(key) < shortest:
        return text.replace(key, "***")
    pieces, start = [], 0
    while (found := text.find(key[:shortest], start)) >= 0:
        end = found + shortest
        while end < len(text) and end - found < len(key) and text[end] == key[end - found]:
            end += 1
        pieces += [text[start:found], "***"]
        start = end
    return "".join(pieces) + text[start:]


def _status_message(exc) -> str:
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        message = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else body.get("message")
    return str(message or getattr(exc, "message", "") or exc)  # redacted, then cut, in _failed


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

    @property
    def sends_response_format(self) -> bool:
        """Whether constrained requests still carry the week's JSON schema (`auto` stops once the
        server refuses it, or answers in plain text regardless)."""
        return self.config.structured_output == "json_schema" or (
            self.config.structured_output == "auto" and not self._format_rejected)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.config.base_url!r})"

    # -- public ----------------------------------------------------------------------------------

    def complete(self, requests: list[LLMRequest], on_response: OnResponse | None = None) -> list[LLMResponse]:
        requests = list(requests)
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._complete_all(requests, on_response))
        # called from inside an event loop (a notebook, an async caller): run ours in a thread
        outcome: dict = {}

        def run():
            try:
                outcome["responses"] = asyncio.run(self._complete_all(requests, on_response))
            except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread below)
                outcome["error"] = exc

        thread = threading.Thread(target=run, name="openai-backend")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["responses"]

    # -- internals -------------------------------------------------------------------------------

    def _client(self):
        import openai

        # the SDK's own HTTP client, with an SSL context made once per process rather than once
        # per call (loading the CA bundle costs ~40 ms); a loopback server is never reached
        # through an HTTP(S)_PROXY from the environment
        http_client = openai.DefaultAsyncHttpxClient(verify=_ssl_context(),
                                                     trust_env=not is_loopback(self.config.base_url))
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.config.base_url, max_retries=0,
                                  timeout=self.config.timeout_s, http_client=http_client)

    async def _complete_all(self, requests: list[LLMRequest], on_response: OnResponse | None) -> list[LLMResponse]:
        semaphore = asyncio.Semaphore(self.config.concurrency)
        client = self._client()

        async def answer(index: int, request: LLMRequest) -> LLMResponse:
            response = await self._one(client, semaphore, request)
            if on_response:
                on_response(index, response)
            return response

        try:
            return list(await asyncio.gather(*(answer(i, r) for i, r in enumerate(requests))))
        finally:
            await client.close()

    def _redact(self, text: str) -> str:
        if self._api_key and self._api_key != PLACEHOLDER_KEY:
            text = redact_key(text, self._api_key)
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
            if len(self._schemas) >= 64:   # callers that build a vocabulary per request
                self._schemas.clear()
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
                except Exception as exc:  # noqa: BLE001  (anything unforeseen: this request fails, the batch goes on)
                    return self._failed(request, started, retries,
                                        f"unexpected {type(exc).__name__}: {exc}")
                if response_format is not None and self.config.structured_output == "auto" \
                        and not response.text.lstrip().startswith("{"):
                    self._format_rejected = True  # ignored rather than refused: later requests go as plain text
                response.transport_retries = retries
                response.latency_s = time.perf_counter() - started
                return response

    def _failed(self, request: LLMRequest, started: float, retries: int, message: str) -> LLMResponse:
        return LLMResponse(text="", prompt_tokens=0, completion_tokens=0,
                           latency_s=time.perf_counter() - started, finish_reason="error",
                           transport_retries=retries,
                           error=self._redact(f"openai backend: {message}")[:ERROR_CHARACTERS])  # redact, then cut

    async def _attempt(self, client, request: LLMRequest, response_format: dict | None) -> LLMResponse:
        import openai

        sampling = request.sampling
        body = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            self._max_tokens_param: sampling.max_tokens,
            "seed": sampling.seed,
        }
        if response_format is not None:
            body["response_format"] = response_format
        try:
            # `client.post(...)` rather than `client.chat.completions.create(...)`: see the module
            # docstring (same request, about 1 ms less CPU per request)
            http_response = await client.post("/chat/completions", cast_to=_http_response_type(), body=body)
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
                    and re.search(r"response[_ ]?format|json[_ ]?schema|structured", message, re.IGNORECASE)):
                raise _FormatRejected(message) from exc
            raise _Fail(f"HTTP {status}: {message}") from exc
        return _parse_completion(http_response.content)


_SSL_CONTEXT = None
_SSL_LOCK = threading.Lock()


def _ssl_context():
    global _SSL_CONTEXT
    with _SSL_LOCK:
        if _SSL_CONTEXT is None:
            try:
                from httpx2 import create_ssl_context
            except ImportError:  # openai < 3
                from httpx import create_ssl_context
            _SSL_CONTEXT = create_ssl_context()
        return _SSL_CONTEXT


def _http_response_type():
    """The HTTP response class of the installed SDK (httpx2 for openai 3.x, httpx before)."""
    try:
        import httpx2

        return httpx2.Response
    except ImportError:  # openai < 3
        import httpx

        return httpx.Response


def _parse_completion(content: bytes) -> LLMResponse:
    """A chat-completion body as an `LLMResponse`; `_Retry` if the body is not one."""
    try:
        data = json.loads(content)
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        if not isinstance(text, str):
            raise TypeError(f"content is {type(text).__name__}")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise _Retry(f"unparsable response body ({type(exc).__name__}: {str(exc)[:80]})") from exc
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return LLMResponse(
        text=text,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        latency_s=0.0,
        finish_reason=str(choice.get("finish_reason") or "stop"),
    )
