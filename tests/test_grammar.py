"""Constrained decoding of event lines against the real SmolLM2 tokenizer (no model weights).

Validity is judged by an oracle written independently of the state machine (sorted byte
strings of every allowed "location, intent]" tail) and, for whole texts, by `parse_week`."""

from __future__ import annotations

import bisect

import pandas as pd
import pytest
import torch

from bgen_assets.config import load_project
from bgen_assets.llm import EventVocabulary, Sampling
from bgen_assets.llm.event_format import parse_week, render_line
from bgen_assets.llm.grammar import ConstrainedSampler, EventGrammar, RowSpec, TokenGrammar, TokenTable, sample_token
from bgen_assets.llm.local_hf import DEFAULT_MODEL, bundled_gguf

MODEL_CACHE = load_project().model_cache
EOS = 2  # <|im_end|>

VOCABULARY = EventVocabulary({
    "Convenience Store": ("Shop & Service",),
    "Café": ("Food",),                       # non-ASCII: byte-level tokens hold half of "é"
    "Bar": ("Nightlife Spot",),
    "Bar & Grill": ("Food", "Nightlife Spot"),  # a location that extends another, two intents
    "Train Station": ("Travel & Transport",),
    "Home (private)": ("Residence",),
    "Office": ("Professional & Other Places",),
    "Park": ("Outdoors & Recreation",),
})


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    converted = MODEL_CACHE / DEFAULT_MODEL
    if (converted / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(converted)
    folder, name = bundled_gguf()
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


@pytest.fixture(scope="module")
def table(tokenizer) -> TokenTable:
    return TokenTable(tokenizer)


@pytest.fixture(scope="module")
def grammar(table) -> TokenGrammar:
    return TokenGrammar(EventGrammar(VOCABULARY), table)


class Oracle:
    """Is a byte string a prefix of well-formed event lines?"""

    def __init__(self, vocabulary: EventVocabulary):
        self.tails = sorted(f"{loc}, {intent}]".encode()
                            for loc, intents in vocabulary.intents_by_location.items() for intent in intents)

    def _line_prefix(self, line: bytes, complete: bool) -> bool:
        head, tail = line[:11], line[11:]
        pattern = [b"[", b"0123456", b",", b" ", b"012", b"0123456789", b":", b"012345", b"0123456789", b",", b" "]
        if any(byte not in allowed for byte, allowed in zip(head, pattern)):
            return False
        if len(head) >= 6 and int(head[4:6]) > 23:
            return False
        if complete:
            return len(head) == 11 and tail in self.tails
        i = bisect.bisect_left(self.tails, tail)
        return i < len(self.tails) and self.tails[i].startswith(tail)

    def __call__(self, text: bytes) -> bool:
        *complete, last = text.split(b"\n")
        return all(self._line_prefix(line, True) for line in complete) and self._line_prefix(last, False)


def walk(grammar: TokenGrammar, text: bytes):
    state = grammar.grammar.consume(grammar.grammar.initial, text)
    assert state is not None, text
    return state


def test_token_bytes_match_the_tokenizer(tokenizer, table):
    assert table.bytes[EOS] is None and table.bytes[0] is None  # special tokens never match text
    checked = 0
    for token_id, data in enumerate(table.bytes):
        if data is None:
            continue
        try:
            text = data.decode()
        except UnicodeDecodeError:
            continue  # a piece of a multi-byte character
        assert tokenizer.decode([token_id]) == text, token_id
        checked += 1
    assert checked > 40_000


@pytest.mark.parametrize("prefix", [
    "", "[", "[3", "[3, 2", "[3, 23:", "[3, 19:5", "[3, 19:59, ", "[3, 19:59, Ca", "[3, 19:59, Caf\xe9",
    "[3, 19:59, Bar", "[3, 19:59, Bar & Grill, ", "[3, 19:59, Bar & Grill, Food]",
    "[0, 07:00, Home (private), Residence]\n", "[0, 07:00, Home (private), Residence]\n[1, 0",
])
def test_allowed_tokens_are_exactly_the_valid_continuations(grammar, table, prefix):
    oracle = Oracle(VOCABULARY)
    data = prefix.encode()
    state = walk(grammar, data)
    allowed = set(grammar.allowed(state).ids.tolist())
    for token_id, piece in enumerate(table.bytes):
        if piece is not None:
            assert (token_id in allowed) == oracle(data + piece), (prefix, piece)
    assert allowed, prefix


def test_half_characters_are_followed_through(grammar, table):
    state = walk(grammar, b"[3, 19:59, Caf")
    first_half = [t for t in grammar.allowed(state).ids.tolist() if table.bytes[t] == b"\xc3"]
    assert first_half, "the lone first byte of 'é' is a continuation"
    after = grammar.advance(state, first_half[0])
    assert b"\xa9" in {table.bytes[t] for t in grammar.allowed(after).ids.tolist()}


def test_intent_after_location_is_one_of_its_intents(grammar, table):
    for location, intents in VOCABULARY.intents_by_location.items():
        state = walk(grammar, f"[5, 12:00, {location}, ".encode())
        tails = [f"{intent}]\n".encode() for intent in intents]
        for token_id in grammar.allowed(state).ids.tolist():
            piece = table.bytes[token_id]
            assert any(tail.startswith(piece) or piece.startswith(tail) for tail in tails), (location, piece)
    other = walk(grammar, b"[5, 12:00, Bar, ")
    assert not any(table.bytes[t].startswith(b"Food") for t in grammar.allowed(other).ids.tolist())


def test_end_of_sequence_only_at_a_line_start_after_a_line(grammar):
    line = b"[0, 07:00, Home (private), Residence]\n"
    for cut in range(len(line)):
        ids = grammar.candidates(walk(grammar, line[:cut]), 500, [EOS]).tolist()
        assert EOS not in ids, line[:cut]
    assert EOS in grammar.candidates(walk(grammar, line), 500, [EOS]).tolist()
    assert EOS in grammar.candidates(walk(grammar, line * 3), 500, [EOS]).tolist()


def test_end_is_forced_when_no_line_fits(grammar):
    rules = grammar.grammar
    shortest = "[0, 00:00, Caf\xe9, Food]\n".encode()
    assert rules.shortest_line == len(shortest)
    after_line = walk(grammar, b"[0, 07:00, Bar, Nightlife Spot]\n")
    # A line and the end of sequence need shortest_line + 1 tokens at worst (one byte each).
    assert grammar.candidates(after_line, rules.shortest_line, [EOS]).tolist() == [EOS]
    assert len(grammar.candidates(after_line, rules.shortest_line + 1, [EOS])) > 1
    # Mid-line with little budget, only tokens after which the line still fits are allowed:
    # here only the shortest completion, "Café, Food]\n", fits.
    mid = walk(grammar, b"[0, 07:00, ")
    rest = shortest[len(b"[0, 07:00, "):]
    tight = grammar.candidates(mid, len(rest) + 1, [EOS]).tolist()
    assert tight and all(rest.startswith(grammar.table.bytes[t]) for t in tight)
    assert len(grammar.candidates(mid, len(rest) + 8, [EOS])) > len(tight)


def random_walk(grammar: TokenGrammar | None, seeds: list[int], budget: int, temperature=1.0, top_p=1.0,
                logits_seed: int = 0, prompt_length: int = 4) -> tuple[list[list[int]], ConstrainedSampler]:
    """Drive the processor like `generate(do_sample=False)` does, on random logits."""
    rows = [RowSpec(Sampling(temperature=temperature, top_p=top_p, max_tokens=budget, seed=s), grammar) for s in seeds]
    sampler = ConstrainedSampler(rows, prompt_length, [EOS])
    logits = torch.Generator().manual_seed(logits_seed)
    ids = torch.zeros((len(seeds), prompt_length), dtype=torch.long)
    for _ in range(budget):
        scores = torch.randn((1, 49152), generator=logits).repeat(len(seeds), 1)  # same model for all rows
        chosen = sampler(ids, scores).argmax(-1)
        chosen[torch.tensor(sampler.finished)] = EOS  # generate pads finished rows
        ids = torch.cat([ids, chosen[:, None]], dim=1)
        if all(sampler.finished):
            break
    out = []
    for row in ids[:, prompt_length:].tolist():
        out.append(row[:row.index(EOS)] if EOS in row else row)
    return out, sampler


@pytest.mark.parametrize("budget", [400, 80, 40])
def test_random_walks_always_parse(grammar, tokenizer, budget):
    rows, sampler = random_walk(grammar, seeds=list(range(8)), budget=budget, logits_seed=budget)
    for tokens, truncated in zip(rows, sampler.truncated):
        text = tokenizer.decode(tokens)
        week = parse_week(text, VOCABULARY)
        assert week.valid, (text, week.errors)
        assert not truncated and len(tokens) < budget  # the end of sequence fit in the budget too
        assert text.endswith("\n")


def test_seeded_sampling_is_deterministic_per_row(grammar):
    alone, _ = random_walk(grammar, seeds=[7], budget=120)
    batched, _ = random_walk(grammar, seeds=[3, 7, 11], budget=120)
    assert batched[1] == alone[0]                     # independent of the batch around it
    assert batched[0] != batched[1] != batched[2]     # different seeds, different texts
    again, _ = random_walk(grammar, seeds=[11, 3, 7], budget=120)
    assert again == [batched[2], batched[0], batched[1]]


def test_temperature_zero_is_the_best_allowed_token(grammar):
    rows, _ = random_walk(grammar, seeds=[1, 2], budget=60, temperature=0.0)
    assert rows[0] == rows[1]  # no randomness left
    scores = torch.randn(49152, generator=torch.Generator().manual_seed(0))
    state = walk(grammar, b"[")
    ids = grammar.candidates(state, 100, [EOS])
    sampler = ConstrainedSampler([RowSpec(Sampling(temperature=0.0), grammar)], 1, [EOS])
    chosen = sampler(torch.zeros((1, 2), dtype=torch.long) + grammar.allowed(grammar.grammar.initial).ids[0],
                     scores[None].clone())
    assert int(chosen.argmax()) == int(ids[scores[ids].argmax()])


def test_unconstrained_rows_only_sample(tokenizer):
    rows, sampler = random_walk(None, seeds=[5, 5, 6], budget=30, top_p=0.5)
    assert rows[0] == rows[1] != rows[2]
    # top-p keeps the head: with a dominant token and a small top_p it is always drawn.
    logits = torch.tensor([5.0, 0.0, 0.0, 0.0])
    generator = torch.Generator().manual_seed(0)
    assert {sample_token(logits, Sampling(temperature=1.0, top_p=0.5), generator) for _ in range(50)} == {0}
    assert len({sample_token(logits * 0, Sampling(temperature=1.0, top_p=1.0), generator) for _ in range(200)}) == 4


def test_names_with_separators_are_quoted_and_read_back(table):
    vocabulary = EventVocabulary({"A, B": ("x",), "Ok": ("y, z", "w"), "[x]": ("v",)})
    rules = EventGrammar(vocabulary)
    for line in ('[0, 00:00, "A, B", x]', '[0, 00:00, Ok, "y, z"]', '[0, 00:00, "[x]", v]', "[0, 00:00, Ok, w]"):
        assert rules.consume(rules.initial, line.encode() + b"\n") is not None, line
    assert rules.consume(rules.initial, b"[0, 00:00, A,") is None  # the unquoted name is not a location
    week = parse_week('[0, 09:00, "A, B", x]\n[1, 10:00, Ok, "y, z"]\n[2, 11:00, "[x]", v]', vocabulary)
    assert week.valid and week.events[["location", "intent"]].values.tolist() == [["A, B", "x"], ["Ok", "y, z"], ["[x]", "v"]]
    assert render_line(0, pd.Timestamp("2019-01-07 09:00"), "A, B", "x") == '[0, 09:00, "A, B", x]'
    with pytest.raises(ValueError):
        EventGrammar(EventVocabulary({"": ("x",)}))


def test_a_row_past_its_own_budget_is_ended_and_marked(grammar):
    # generate runs to the largest budget; a row with a smaller one gets end of sequence.
    rows = [RowSpec(Sampling(max_tokens=5, seed=1)), RowSpec(Sampling(max_tokens=9, seed=1))]
    sampler = ConstrainedSampler(rows, 1, [EOS])
    ids = torch.zeros((2, 1), dtype=torch.long)
    for _ in range(9):
        chosen = sampler(ids, torch.zeros((2, 49152))).argmax(-1)
        chosen[torch.tensor(sampler.finished)] = EOS
        ids = torch.cat([ids, chosen[:, None]], dim=1)
    assert ids[0, 6].item() == EOS and EOS not in ids[0, 1:6].tolist()
    assert ids[0, 1:6].tolist() == ids[1, 1:6].tolist()  # the same seed draws the same tokens
    assert sampler.truncated == [True, False]
