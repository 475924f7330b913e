"""A small OpenAI-compatible chat server on loopback, for tests and benchmarks.

It answers `POST /v1/chat/completions` by copying every line of the LAST user message that is
an event line (`event_format.LINE`), so a prompt that contains a real week gets that week back,
valid (a last user message without event lines -- a repair turn -- is answered from the latest
user message that has some): as plain lines, or as `{"events": [[d, "HH:MM", location, intent], ...]}` when the
request asks for a `json_schema` response_format. `GET /v1/models` lists one model and
`GET /stats` counts requests and the faults served (`DELETE /stats` resets the counts).
`PUT /hold?after=N` answers the next N chat requests and holds every later one until `DELETE /hold`,
so a test can stop a client mid-run however slow the machine is.

Faults are deterministic. For each chat request the server picks ONE fault, first rule that
applies wins:

1. a directive in the last user message, `#faults: 429,500` -- attempt k (0-based) of that
   prompt gets the k-th fault, later attempts are answered normally; lets one test give each
   request its own story regardless of the order the client sends them in;
2. `per_prompt=[...]` -- the same, for every distinct prompt ("every request fails once with
   429, then succeeds" is `per_prompt=["429"]`);
3. `faults=[...]` -- applied cyclically over all chat requests in arrival order;
4. otherwise `ok`.

A prompt is identified by its whole message list; attempts are counted per prompt. A repair
conversation (the first prompt + the bad answer + "fix it") is a new prompt whose last user
message has no directive, so a content fault given by directive happens once, then is fixed.

Fault names:

    ok            a normal answer
    429           HTTP 429; `429@0.1` sends `Retry-After: 0.1`, plain `429` sends the server's
                  `retry_after_s` if set, else no Retry-After header
    500 502 503   HTTP 5xx with an OpenAI-style error body (`503@2` adds Retry-After: 2)
    timeout       hangs (`hang_s`, default 60 s, or until the client disconnects), then answers
    malformed     HTTP 200, `application/json`, body cut in the middle (transport-level garbage)
    bad_shape     HTTP 200, valid JSON that is not a chat completion (no `choices`)
    truncated     HTTP 200, the answer cut off mid-line with `finish_reason: "length"`
    garbage       HTTP 200, content that is not event lines (content-level malformed)
    reject_format HTTP 400 "response_format is not supported" (also: `reject_response_format=True`
                  rejects every request that carries a response_format)
    401           HTTP 401 whose message quotes the bearer token verbatim (a careless server),
                  to check that clients keep keys out of their own messages

    with serve(latency_s=0.2, per_prompt=["429@0.1"]) as base_url:   # http://127.0.0.1:PORT/v1
        ...

    python -m bgen_assets.testing.loopback_server --port 8000 --latency 0.2 --faults ok,ok,500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from bgen_assets.llm.event_format import LINE

FAULTS = ("ok", "429", "500", "502", "503", "timeout", "malformed", "bad_shape", "truncated",
          "garbage", "reject_format", "401")
DIRECTIVE = re.compile(r"#faults:[ \t]*(?P<faults>[\w@., \t]*)")
MODEL_ID = "loopback-echo"


def _check_fault(name: str) -> str:
    base = name.split("@", 1)[0]
    if base not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)} (429@SECONDS for Retry-After)")
    return name


@dataclass
class FaultPlan:
    faults: Sequence[str] = ()          # cyclic over all chat requests
    per_prompt: Sequence[str] = ()      # attempt k of each distinct prompt
    directives: bool = True             # honour `#faults: ...` in the last user message

    def __post_init__(self):
        for name in (*self.faults, *self.per_prompt):
            _check_fault(name)


@dataclass
class LoopbackState:
    plan: FaultPlan
    latency_s: float = 0.0
    retry_after_s: float | None = None
    hang_s: float = 60.0
    reject_response_format: bool = False
    requests: int = 0
    chat_requests: int = 0
    chat_arrivals: int = 0
    hold_after: int | None = None   # chat requests arriving after this many arrivals are held (PUT /hold)
    in_flight: int = 0
    max_in_flight: int = 0
    served: Counter = field(default_factory=Counter)
    with_response_format: int = 0
    attempts: Counter = field(default_factory=Counter)   # per prompt key
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stats(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "chat_requests": self.chat_requests,
                    "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                    "faults": dict(self.served), "with_response_format": self.with_response_format,
                    "distinct_prompts": len(self.attempts)}

    def reset(self) -> None:
        with self.lock:
            self.requests = self.chat_requests = self.max_in_flight = self.with_response_format = 0
            self.served.clear()
            self.attempts.clear()

    def choose(self, messages: list, last_user: str) -> str:
        """The fault for this request (and count the attempt)."""
        key = json.dumps(messages, sort_keys=True, ensure_ascii=False)
        with self.lock:
            attempt = self.attempts[key]
            self.attempts[key] += 1
            index = self.chat_requests
            self.chat_requests += 1
        directive = DIRECTIVE.search(last_user) if self.plan.directives else None
        if directive:
            names = [n.strip() for n in directive["faults"].split(",") if n.strip()]
            return _check_fault(names[attempt]) if attempt < len(names) else "ok"
        if self.plan.per_prompt:
            return self.plan.per_prompt[attempt] if attempt < len(self.plan.per_prompt) else "ok"
        if self.plan.faults:
            return self.plan.faults[index % len(self.plan.faults)]
        return "ok"


def _user_texts(messages: list) -> list[str]:
    """The user messages' text, last first."""
    texts = []
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
            texts.append(content if isinstance(content, str) else "")
    return texts


def _event_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if LINE.match(line.strip())]


def _answer(messages: list, as_json: bool) -> str:
    """The event lines of the last user message; if it has none (a repair turn: "your answer had
    these errors, write the week again"), those of the latest user message that has some."""
    lines = next((found for found in map(_event_lines, _user_texts(messages)) if found), [])
    if not as_json:
        return "\n".join(lines)
    events = []
    for line in lines:
        m = LINE.match(line)
        events.append([int(m["weekday"]), f"{int(m['hour']):02d}:{m['minute']}", m["location"], m["intent"]])
    return json.dumps({"events": events})


def _cut_mid_line(text: str) -> str:
    """Cut `text` inside a line (never exactly at a line boundary)."""
    if len(text) < 2:
        return text[:0]
    cut = max(1, len(text) // 2)
    while cut < len(text) - 1 and (text[cut - 1] == "\n" or text[cut] == "\n"):
        cut += 1
    return text[:cut]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def create_app(state: LoopbackState):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def error(status: int, message: str, kind: str, headers: dict | None = None):
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}},
                            status_code=status, headers=headers)

    async def models(request):
        with state.lock:
            state.requests += 1
        return JSONResponse({"object": "list", "data": [
            {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "bgen"}]})

    async def stats(request):
        if request.method == "DELETE":
            state.reset()
        return JSONResponse(state.stats())

    async def hold(request):
        with state.lock:
            state.hold_after = state.chat_arrivals + int(request.query_params.get("after", 0)) \
                if request.method == "PUT" else None
        return JSONResponse({"hold_after": state.hold_after})

    async def chat(request):
        with state.lock:
            state.requests += 1
            state.chat_arrivals += 1
            arrival = state.chat_arrivals
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await request.body()   # read (and cached) first: is_disconnected() would consume the body message
            while state.hold_after is not None and arrival > state.hold_after and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return await _chat(request)
        finally:
            with state.lock:
                state.in_flight -= 1

    async def _chat(request):
        try:
            body = json.loads(await request.body())
            messages = body["messages"]
            assert isinstance(messages, list)
        except Exception:  # noqa: BLE001  (any unreadable body is the client's error)
            return error(400, "request body must be JSON with a `messages` list", "invalid_request_error")
        response_format = body.get("response_format")
        if response_format:
            with state.lock:
                state.with_response_format += 1
        texts = _user_texts(messages)
        last_user = texts[0] if texts else ""
        try:
            fault = state.choose(messages, last_user)
        except ValueError as exc:  # a bad `#faults:` directive
            return error(400, str(exc), "invalid_request_error")
        if state.reject_response_format and response_format:
            fault = "reject_format"
        name, _, arg = fault.partition("@")
        with state.lock:
            state.served[name] += 1

        if state.latency_s > 0:
            await asyncio.sleep(state.latency_s)

        if name == "429":
            retry_after = arg or (None if state.retry_after_s is None else f"{state.retry_after_s:g}")
            return error(429, "Rate limit reached (loopback fault)", "rate_limit_error",
                         {"Retry-After": retry_after} if retry_after else None)
        if name in ("500", "502", "503"):
            return error(int(name), f"Server error {name} (loopback fault)", "server_error",
                         {"Retry-After": arg} if arg else None)
        if name == "401":
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            return error(401, f"Incorrect API key provided: {token}. (loopback fault)", "invalid_request_error")
        if name == "reject_format":
            return error(400, "response_format is not supported by this server (loopback fault)",
                         "invalid_request_error")
        if name == "malformed":
            return Response('{"id": "chatcmpl-loopback", "object": "chat.completion", "choices": [{"index": 0, "mess',
                            media_type="application/json")
        if name == "bad_shape":
            return JSONResponse({"detail": "this is not a chat completion"})
        if name == "timeout":
            deadline = time.monotonic() + (float(arg) if arg else state.hang_s)
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    break
                await asyncio.sleep(0.05)

        as_json = bool(response_format and response_format.get("type") == "json_schema")
        text, finish = _answer(messages, as_json), "stop"
        if name == "truncated":
            text, finish = _cut_mid_line(text), "length"
        elif name == "garbage":
            text = "Sure! Here is a plausible week:\nMonday morning: gym, then work.\nTuesday: mostly at home."
        prompt_tokens = sum(_tokens(m.get("content") or "") for m in messages
                            if isinstance(m, dict) and isinstance(m.get("content"), str))
        with state.lock:
            number = state.chat_requests
        return JSONResponse({
            "id": f"chatcmpl-loopback-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or MODEL_ID,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": _tokens(text),
                      "total_tokens": prompt_tokens + _tokens(text)},
        })

    return Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/stats", stats, methods=["GET", "DELETE"]),
        Route("/hold", hold, methods=["PUT", "DELETE"]),
    ])


def make_state(*, latency_s: float = 0.0, faults: Sequence[str] = (), per_prompt: Sequence[str] = (),
               directives: bool = True, retry_after_s: float | None = None, hang_s: float = 60.0,
               reject_response_format: bool = False) -> LoopbackState:
    return LoopbackState(FaultPlan(tuple(faults), tuple(per_prompt), directives), latency_s=latency_s,
                         retry_after_s=retry_after_s, hang_s=hang_s,
                         reject_response_format=reject_response_format)


def _uvicorn_server(state: LoopbackState):
    import uvicorn

    config = uvicorn.Config(create_app(state), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1, backlog=4096, timeout_keep_alive=30)
    return uvicorn.Server(config)


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    return sock


@contextmanager
def serve(*, latency_s: float = 0.0, faults: Sequence[str] = (), per_prompt: Sequence[str] = (),
          directives: bool = True, retry_after_s: float | None = None, hang_s: float = 60.0,
          reject_response_format: bool = False, port: int = 0, process: bool = False) -> Iterator[str]:
    """Run the server on 127.0.0.1 (a free port unless `port`); yields `http://127.0.0.1:PORT/v1`.

    By default it runs in a background thread of this process. `process=True` runs it in a
    child process instead, so that its CPU work does not share this interpreter's GIL with the
    client under test (what a benchmark of the client wants)."""
    options = {"latency_s": latency_s, "faults": faults, "per_prompt": per_prompt, "directives": directives,
               "retry_after_s": retry_after_s, "hang_s": hang_s, "reject_response_format": reject_response_format}
    if process:
        with _serve_process(port=port, **options) as url:
            yield url
        return
    state = make_state(**options)
    sock = _bound_socket("127.0.0.1", port)
    server = _uvicorn_server(state)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="loopback-llm", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the loopback LLM server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def _serve_process(*, port: int, latency_s, faults, per_prompt, directives, retry_after_s, hang_s,
                   reject_response_format) -> Iterator[str]:
    import subprocess
    import sys

    command = [sys.executable, "-m", "bgen_assets.testing.loopback_server", "--port", str(port),
               "--latency", repr(float(latency_s)), "--hang", repr(float(hang_s)),
               "--faults", ",".join(faults), "--per-prompt", ",".join(per_prompt)]
    if retry_after_s is not None:
        command += ["--retry-after", repr(float(retry_after_s))]
    if reject_response_format:
        command.append("--reject-response-format")
    if not directives:
        command.append("--no-directives")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()          # "loopback LLM server on http://127.0.0.1:PORT/v1 ..."
        match = re.search(r"(http://\S+/v1)", line)
        if not match:
            raise RuntimeError(f"the loopback LLM server process did not start: {line!r}")
        yield match[1]
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()


def _control(base_url: str, path: str, method: str = "GET") -> dict:
    """A control endpoint of a loopback server, given its `.../v1` base URL."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never via a proxy
    request = urllib.request.Request(base_url.rstrip("/").removesuffix("/v1") + path, method=method)
    with opener.open(request, timeout=10) as answer:
        return json.loads(answer.read())


def stats(base_url: str) -> dict:
    """`GET /stats`: the requests and faults served so far."""
    return _control(base_url, "/stats")


def hold(base_url: str, after: int | None) -> None:
    """Answer the next `after` chat requests and hold the later ones; None: answer every request again."""
    _control(base_url, "/hold" if after is None else f"/hold?after={after}", "DELETE" if after is None else "PUT")


def _split(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: a free port (printed)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--faults", default="", help="comma list applied cyclically, e.g. ok,429@0.5,500")
    parser.add_argument("--per-prompt", default="", help="comma list: attempt k of each prompt")
    parser.add_argument("--no-directives", action="store_true", help="ignore `#faults:` in prompts")
    parser.add_argument("--retry-after", type=float, default=None)
    parser.add_argument("--hang", type=float, default=60.0, help="seconds a `timeout` fault hangs")
    parser.add_argument("--reject-response-format", action="store_true")
    args = parser.parse_args(argv)
    state = make_state(latency_s=args.latency, faults=_split(args.faults), per_prompt=_split(args.per_prompt),
                       directives=not args.no_directives, retry_after_s=args.retry_after, hang_s=args.hang,
                       reject_response_format=args.reject_response_format)
    sock = _bound_socket(args.host, args.port)
    print(f"loopback LLM server on http://{args.host}:{sock.getsockname()[1]}/v1 (model {MODEL_ID!r})",
          flush=True)
    _uvicorn_server(state).run(sockets=[sock])


if __name__ == "__main__":
    main()
