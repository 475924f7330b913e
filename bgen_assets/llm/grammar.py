"""Constrained decoding of event lines, and per-request seeded sampling, for local models.

Every line a constrained row produces has exactly the form `event_format.render_line` writes:

    [d, HH:MM, location, intent]\\n

weekday digit 0-6, hour 00-23, minute 00-59, a location of the vocabulary and an intent that
location allows. End of sequence is allowed only at a line start after at least one complete
line, so whatever a constrained row emits, `parse_week` accepts it.

Three layers:
- `EventGrammar`: a byte-level state machine over those lines for one vocabulary (bytes, not
  characters, because byte-level BPE tokens may hold half of a UTF-8 character).
- `TokenGrammar`: the grammar against one tokenizer: for a state, the tokens whose bytes can all
  be consumed from it (computed lazily, cached per state; only tokens whose first byte the state
  accepts are simulated).
- `ConstrainedSampler`: a transformers `LogitsProcessor` that tracks a grammar state per batch row,
  masks, and *samples inside the processor* with the row's own `torch.Generator`, then leaves only
  the drawn token finite, so `generate(do_sample=False)` takes exactly it. A request's text thus
  depends on its own seed, not on which other requests share its batch.

Token budget: a row may only take a token after which the current line, and then the
end-of-sequence token, still fit within the tokens left. Every byte is a token of its own in
byte-level vocabularies, so the shortest completion in bytes bounds the tokens a completion
needs. The bound is conservative (a line costs about half its bytes in tokens), so a week that
runs into the budget ends up to about one line early; near the end the line is driven to its
newline and then only end of sequence is left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from bgen_assets.llm import EventVocabulary, Sampling
from bgen_assets.llm.event_format import line_name

# --- the byte-level state machine ---------------------------------------------------------------

# A state is a (kind, value) pair of ints: small, hashable, cheap to cache masks on.
START0, START1 = 0, 1      # line start: before the first line / after >= 1 complete line
FIXED = 2                  # value = slot index into _FIXED_SLOTS
LOCATION = 3               # value = node of the location trie
INTENT_SPACE = 4           # after "location,": expects " ", value = root node of its intent trie
INTENT = 5                 # value = node of the intent trie pool
NEWLINE = 6                # after "]": expects "\n"

_DIGITS = frozenset(b"0123456789")
# The fixed part of a line after "[": "d, HH:MM, " (byte sets per slot; hour units depend on tens).
_FIXED_SLOTS: list[frozenset[int]] = [
    frozenset(b"0123456"),  # 0 weekday
    frozenset(b","),        # 1
    frozenset(b" "),        # 2
    frozenset(b"012"),      # 3 hour tens
    _DIGITS,                # 4 hour units (tens 0 or 1)
    frozenset(b"0123"),     # 5 hour units (tens 2)
    frozenset(b":"),        # 6
    frozenset(b"012345"),   # 7 minute tens
    _DIGITS,                # 8 minute units
    frozenset(b","),        # 9
    frozenset(b" "),        # 10 -> location
]
# Bytes still to come from each fixed slot up to the location (slots 4 and 5 are alternatives).
_FIXED_LEFT = [10, 9, 8, 7, 6, 6, 5, 4, 3, 2, 1]


class _Trie:
    """Byte trie; `end[node]` holds the payload of a name ending there (None: no name ends)."""

    def __init__(self) -> None:
        self.children: list[dict[int, int]] = []
        self.end: list[object] = []

    def new_node(self) -> int:
        self.children.append({})
        self.end.append(None)
        return len(self.children) - 1

    def add(self, root: int, name: bytes, payload: object) -> None:
        node = root
        for byte in name:
            nxt = self.children[node].get(byte)
            if nxt is None:
                nxt = self.children[node][byte] = self.new_node()
            node = nxt
        self.end[node] = payload

    def min_finish(self, root: int, cost_at_end) -> dict[int, int]:
        """Per node below `root`: fewest bytes to finish a name from there plus `cost_at_end(payload)`."""
        best: dict[int, int] = {}

        def visit(node: int) -> int:
            own = cost_at_end(self.end[node]) if self.end[node] is not None else 1 << 30
            value = min([own] + [1 + visit(child) for child in self.children[node].values()])
            best[node] = value
            return value

        visit(root)
        return best


class EventGrammar:
    """The line format over one vocabulary, as a byte-level deterministic state machine."""

    def __init__(self, vocabulary: EventVocabulary) -> None:
        self.locations = _Trie()
        self.intents = _Trie()          # one sub-trie per distinct intent set, shared by locations
        self.location_root = self.locations.new_node()
        intent_roots: dict[tuple[str, ...], int] = {}
        for location, intents in sorted(vocabulary.intents_by_location.items()):
            allowed = tuple(sorted({i for i in intents if i}))
            if not location or not allowed:
                continue  # no line can name it
            if allowed not in intent_roots:
                root = intent_roots[allowed] = self.intents.new_node()
                for intent in allowed:
                    self.intents.add(root, line_name(intent).encode(), True)
            self.locations.add(self.location_root, line_name(location).encode(), intent_roots[allowed])
        if self.locations.end.count(None) == len(self.locations.end):
            raise ValueError("the vocabulary has no usable location with an intent")

        # Shortest completions (bytes to the end of the line, "\n" included), for budget checks.
        self._intent_left: dict[int, int] = {}
        for root in intent_roots.values():
            self._intent_left.update(self.intents.min_finish(root, lambda _: 2))       # "]\n"
        self._location_left = self.locations.min_finish(
            self.location_root, lambda intent_root: 2 + self._intent_left[intent_root])  # ", " + intent
        self.shortest_line = 1 + _FIXED_LEFT[0] + self._location_left[self.location_root]
        longest_intent = {root: self._longest(self.intents, root) for root in intent_roots.values()}
        self.longest_line = 1 + _FIXED_LEFT[0] + max(
            len(loc.encode()) + 2 + longest_intent[root] + 2
            for loc, root in self._names(self.locations, self.location_root))

    @staticmethod
    def _names(trie: _Trie, root: int):
        stack = [(root, b"")]
        while stack:
            node, prefix = stack.pop()
            if trie.end[node] is not None:
                yield prefix.decode(), trie.end[node]
            stack.extend((child, prefix + bytes([b])) for b, child in trie.children[node].items())

    def _longest(self, trie: _Trie, root: int) -> int:
        return max(len(name.encode()) for name, _ in self._names(trie, root))

    initial = (START0, 0)

    def step(self, state: tuple[int, int], byte: int) -> tuple[int, int] | None:
        """The state after consuming `byte`, or None when the byte would break the format."""
        kind, value = state
        if kind == START0 or kind == START1:
            return (FIXED, 0) if byte == 0x5B else None  # "["
        if kind == FIXED:
            if byte not in _FIXED_SLOTS[value]:
                return None
            if value == 3:                                # hour tens: 2 only allows 20-23
                return (FIXED, 5 if byte == 0x32 else 4)
            if value == 4:
                return (FIXED, 6)
            if value == 10:
                return (LOCATION, self.location_root)
            return (FIXED, value + 1)
        if kind == LOCATION:
            child = self.locations.children[value].get(byte)
            if child is not None:
                return (LOCATION, child)
            intent_root = self.locations.end[value]
            return (INTENT_SPACE, intent_root) if byte == 0x2C and intent_root is not None else None
        if kind == INTENT_SPACE:
            return (INTENT, value) if byte == 0x20 else None
        if kind == INTENT:
            child = self.intents.children[value].get(byte)
            if child is not None:
                return (INTENT, child)
            return (NEWLINE, 0) if byte == 0x5D and self.intents.end[value] else None  # "]"
        if kind == NEWLINE:
            return (START1, 0) if byte == 0x0A else None
        raise ValueError(f"unknown state {state}")

    def consume(self, state: tuple[int, int] | None, data: bytes) -> tuple[int, int] | None:
        for byte in data:
            if state is None:
                return None
            state = self.step(state, byte)
        return state

    def bytes_left(self, state: tuple[int, int]) -> int:
        """Fewest bytes that take `state` to a point where the sequence may end."""
        kind, value = state
        if kind == START1:
            return 0
        if kind == START0:
            return self.shortest_line
        if kind == FIXED:
            return _FIXED_LEFT[value] + self._location_left[self.location_root]
        if kind == LOCATION:
            return self._location_left[value]
        if kind == INTENT_SPACE:
            return 1 + self._intent_left[value]
        if kind == INTENT:
            return self._intent_left[value]
        return 1  # NEWLINE

    @staticmethod
    def may_end(state: tuple[int, int]) -> bool:
        return state[0] == START1


# --- the grammar against a tokenizer ------------------------------------------------------------

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id stands for (None: special/added tokens, which never match text)."""
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    try:
        decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    except AttributeError:  # a slow (Python) tokenizer
        decoder = {}
    decoder_types = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", [])}
    table: list[bytes | None] = []
    if "ByteLevel" in decoder_types:
        to_byte = {char: byte for byte, char in _bytes_to_unicode().items()}
        for token_id, piece in enumerate(pieces):
            ok = piece is not None and token_id not in special and all(c in to_byte for c in piece)
            table.append(bytes(to_byte[c] for c in piece) if ok and piece else None)
        return table
    for token_id, piece in enumerate(pieces):  # SentencePiece style: "▁" is a space, <0xNN> a byte
        if piece is None or token_id in special:
            table.append(None)
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            table.append(bytes([int(piece[3:5], 16)]))
        else:
            table.append(piece.replace("\u2581", " ").encode() or None)
    return table


class TokenTable:
    """A tokenizer's tokens as bytes, grouped by first byte (built once per tokenizer)."""

    def __init__(self, tokenizer) -> None:
        self.bytes = token_bytes(tokenizer)
        groups: dict[int, list[int]] = {}
        for token_id, data in enumerate(self.bytes):
            if data:
                groups.setdefault(data[0], []).append(token_id)
        self.by_first_byte = groups


@dataclass
class Allowed:
    ids: torch.Tensor        # token ids that keep the text a valid prefix
    bytes_left: torch.Tensor  # per id: the shortest completion (bytes) of the line after it


class TokenGrammar:
    """`EventGrammar` lifted to token ids of one tokenizer; masks computed lazily per state."""

    def __init__(self, grammar: EventGrammar, table: TokenTable) -> None:
        self.grammar = grammar
        self.table = table
        self._cache: dict[tuple[int, int], Allowed] = {}

    def allowed(self, state: tuple[int, int]) -> Allowed:
        cached = self._cache.get(state)
        if cached is None:
            ids, left = [], []
            for first_byte, candidates in self.table.by_first_byte.items():
                if self.grammar.step(state, first_byte) is None:
                    continue  # the whole group is impossible from here
                for token_id in candidates:
                    after = self.grammar.consume(state, self.table.bytes[token_id])
                    if after is not None:
                        ids.append(token_id)
                        left.append(self.grammar.bytes_left(after))
            cached = self._cache[state] = Allowed(torch.tensor(ids, dtype=torch.long),
                                                  torch.tensor(left, dtype=torch.long))
        return cached

    def advance(self, state: tuple[int, int] | None, token_id: int) -> tuple[int, int] | None:
        data = self.table.bytes[token_id] if token_id < len(self.table.bytes) else None
        return self.grammar.consume(state, data) if data else None

    def candidates(self, state: tuple[int, int], tokens_left: int, eos_ids: Sequence[int]) -> torch.Tensor:
        """Token ids allowed in `state` when `tokens_left` tokens (this one included) remain."""
        allowed = self.allowed(state)
        ids = allowed.ids
        room = tokens_left - 2  # what is left after this token and the end-of-sequence token
        if room < self.grammar.longest_line:
            # Tight budget: only tokens after which the line can still be finished in time.
            ids = ids[allowed.bytes_left <= room]
        if self.grammar.may_end(state):
            ids = torch.cat([ids, torch.tensor(list(eos_ids), dtype=torch.long)])
        if len(ids) == 0:
            # Not even the shortest line fits (a tiny budget before any line): best effort.
            ids = allowed.ids if len(allowed.ids) else torch.tensor(list(eos_ids)[:1], dtype=torch.long)
        return ids


# --- the logits processor -----------------------------------------------------------------------

@dataclass
class RowSpec:
    """One batch row: its sampling (seed, temperature, top-p, budget) and optional grammar."""

    sampling: Sampling
    grammar: TokenGrammar | None = None


def sample_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """Index into `logits` drawn with temperature/top-p from `generator` (temperature 0: argmax)."""
    if sampling.temperature <= 0 or len(logits) == 1:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.double() / sampling.temperature, dim=-1)
    order = torch.sort(probs, descending=True, stable=True).indices
    probs = probs[order]
    if sampling.top_p < 1.0:
        # Keep the smallest head whose mass reaches top_p (the first token always stays).
        keep = (torch.cumsum(probs, 0) - probs) < sampling.top_p
        probs = probs[keep]
    pick = torch.multinomial(probs, 1, generator=generator)
    return int(order[pick])


class ConstrainedSampler(LogitsProcessor):
    """Grammar masks and seeded sampling for one `generate` call; use with `do_sample=False`.

    Rows may have different token budgets (`sampling.max_tokens`); call `generate` with the
    largest: a row past its own budget gets end of sequence and counts as `truncated`.
    """

    def __init__(self, rows: list[RowSpec], prompt_length: int, eos_ids: Sequence[int],
                 on_step: Callable[[ConstrainedSampler], None] | None = None) -> None:
        self.rows = rows
        self.prompt_length = prompt_length
        self.eos_ids = list(eos_ids)
        self.states = [row.grammar.grammar.initial if row.grammar else None for row in rows]
        self.generators = [torch.Generator().manual_seed(int(row.sampling.seed)) for row in rows]
        self.finished = [False] * len(rows)
        self.truncated = [False] * len(rows)
        self.off_grammar = [False] * len(rows)  # a token the grammar rejects came in (should not happen)
        self.on_step = on_step                   # called after each step, e.g. for live throughput
        self.prompt_done_at: float | None = None  # the first call comes right after the prompt pass
        self.tokens = 0                           # tokens chosen for rows still generating
        self._seen = 0

    def _advance(self, row: int, token_id: int) -> None:
        if self.finished[row]:
            return  # generate pads finished rows
        if token_id in self.eos_ids:
            self.finished[row] = True
        elif self.rows[row].grammar is not None and not self.off_grammar[row]:
            self.states[row] = self.rows[row].grammar.advance(self.states[row], token_id)
            self.off_grammar[row] = self.states[row] is None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_done_at is None:
            self.prompt_done_at = time.perf_counter()
        generated = input_ids.shape[1] - self.prompt_length
        new_tokens = input_ids[:, self.prompt_length + self._seen:].tolist()
        for row, tokens in enumerate(new_tokens):
            for token_id in tokens:
                self._advance(row, token_id)
        self._seen = generated

        chosen = torch.full_like(scores, float("-inf"))
        for row, spec in enumerate(self.rows):
            if self.finished[row]:
                token = self.eos_ids[0]
            elif generated >= spec.sampling.max_tokens:
                self.truncated[row] = True
                token = self.eos_ids[0]
            elif spec.grammar is None or self.off_grammar[row]:
                token = sample_token(scores[row].float().cpu(), spec.sampling, self.generators[row])
            else:  # sampled on the CPU with the row's CPU generator, also when the model runs on a GPU
                ids = spec.grammar.candidates(self.states[row], spec.sampling.max_tokens - generated, self.eos_ids)
                ids = ids[ids < scores.shape[1]]
                row_scores = scores[row].float().cpu()
                token = int(ids[sample_token(row_scores[ids], spec.sampling, self.generators[row])])
            chosen[row, token] = 0.0  # the only finite score: greedy decoding takes exactly this token
        self.tokens += self.finished.count(False)
        if self.on_step:
            self.on_step(self)
        return chosen
