"""Prompt components, conditioning windows and multi-week parsing of the BehaviorGen generator."""

import pandas as pd
import pytest

from bgen_assets.generators import WeekTask, load_generator_specs
from bgen_assets.generators.behaviorgen import BehaviorGenParams, build_messages, conditioning_events, conversations_for
from bgen_assets.llm import EventVocabulary
from bgen_assets.llm.event_format import parse_weeks

VOCABULARY = EventVocabulary({"Office": ("Work",), "Park": ("Outdoors",), "Ramen Restaurant": ("Food",)})


@pytest.fixture
def history():
    rows = [("2019-01-03 09:00", "Office", "Work"), ("2019-01-10 08:30", "Office", "Work"),
            ("2019-01-12 13:00", "Park", "Outdoors"), ("2019-01-13 19:10", "Ramen Restaurant", "Food")]
    frame = pd.DataFrame(rows, columns=["ts", "location", "intent"]).assign(ts=lambda f: pd.to_datetime(f.ts))
    frame["week"] = frame.ts.dt.to_period("W-SUN").dt.start_time.dt.strftime("%Y-%m-%d")
    frame["weekday"] = frame.ts.dt.weekday
    frame["user_id"] = "u1"
    return frame


class Context:
    vocabulary = VOCABULARY
    description = "Check-ins of people in a city."


def messages_for(history, **prompt):
    params = BehaviorGenParams.model_validate({"prompt": prompt})
    task = WeekTask("u1", "2019-01-07", history, {"gender": "female", "education": "unknown"}, [1])
    return build_messages(task, params, Context(), history[history.week == "2019-01-07"], 3)


def test_full_prompt_has_every_component(history):
    system, user = messages_for(history)
    assert system["role"] == "system" and "Generator" in system["content"]
    assert "gender: female" in user["content"] and "education" not in user["content"]  # unknown left out
    assert "[3, 08:30, Office, Work]" in user["content"] and "[3, 09:00" not in user["content"]  # only last week
    assert "intent is one of: Food, Outdoors, Work" in user["content"]
    assert "e.g. Office (Work); Park (Outdoors); Ramen Restaurant (Food)" in user["content"]  # the user's own, by visits
    assert "Monday 2019-01-14" in user["content"]


@pytest.mark.parametrize(("switch", "absent"), [("role", "Generator"), ("profile", "gender: female"),
                                                ("format", "Answer with events only")])
def test_each_component_can_be_switched_off(history, switch, absent):
    text = "\n".join(m["content"] for m in messages_for(history, **{switch: False}))
    assert absent not in text and "[3, 08:30, Office, Work]" in text


@pytest.mark.parametrize(("window", "expected"), [("1_record", 1), ("1d", 1), ("3d", 2), ("7d", 3), ("10d", 3)])
def test_conditioning_windows_end_with_the_real_week(history, window, expected):
    shown = conditioning_events(history, "2019-01-07", window)
    assert len(shown) == expected and shown.ts.max() == pd.Timestamp("2019-01-13 19:10")


def test_no_segment_makes_one_conversation_per_user(history):
    spec = next(s for s in load_generator_specs() if s.name == "behaviorgen_no_segment")
    params = spec.settings
    tasks = [WeekTask("u1", week, history[history.week <= week], {}, [i]) for i, week in enumerate(["2019-01-07", "2018-12-31"])]
    (conversation,) = conversations_for(tasks, params, Context())
    assert conversation.tasks == [1, 0]  # week order
    assert "following 2 weeks" in conversation.messages[-1]["content"]


def test_multi_week_answers_split_where_time_goes_back():
    text = "[1, 09:00, Office, Work]\n[5, 12:00, Park, Outdoors]\n[0, 19:00, Ramen Restaurant, Food]\n"
    first, second = parse_weeks(text, VOCABULARY, 2)
    assert first.valid and second.valid and len(first.events) == 2 and len(second.events) == 1
    assert all("instead of 3" in e for w in parse_weeks(text, VOCABULARY, 3) for e in w.errors[-1:])
