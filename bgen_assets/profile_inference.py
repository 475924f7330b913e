"""Profile inference by an LLM, the declared alternative to the rules in
models/dataset/inferred_profiles.sql (`profile_inference: {method: llm}` in bgen_project.yml).

Each user's behaviour is summarised, the model is asked for the five attributes as JSON with
the values allowed by the seed `profile_values`, and every answer is validated: a value that is
missing or not allowed keeps the rule-based value (and says so in its `*_source`)."""

from __future__ import annotations

import json
import re

import pandas as pd

from bgen_assets.llm import LLMRequest, Sampling

SUMMARY_SQL = """
SELECT user_id, count(*) AS n_events, count(DISTINCT date_trunc('week', ts)) AS n_weeks,
       avg((weekday < 5 AND time_slot * {slot} BETWEEN 540 AND 1079)::INT) AS office_hours_share,
       avg((time_slot * {slot} >= 1260 OR time_slot * {slot} < 300)::INT) AS night_share,
       avg((weekday >= 5)::INT) AS weekend_share
FROM {events} GROUP BY user_id ORDER BY user_id
"""
TOP_INTENTS_SQL = """
SELECT user_id, intent, count(*) / sum(count(*)) OVER (PARTITION BY user_id) AS share
FROM {events} GROUP BY user_id, intent
QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY count(*) DESC, intent) <= 5
ORDER BY user_id, share DESC
"""
JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def parse_profile(text: str, allowed: dict[str, list[str]]) -> tuple[dict[str, str], list[str]]:
    """The allowed values found in the answer's first JSON object, and what was wrong."""
    match = JSON_OBJECT.search(text)
    if not match:
        return {}, ["no JSON object in the answer"]
    try:
        answer = json.loads(match.group())
    except ValueError as exc:
        return {}, [f"invalid JSON: {exc}"]
    values, errors = {}, []
    for attribute, options in allowed.items():
        value = answer.get(attribute) if isinstance(answer, dict) else None
        if value in options:
            values[attribute] = value
        else:
            errors.append(f"{attribute}: {value!r} is not one of {options}")
    return values, errors


def infer_profiles(rule_profiles: pd.DataFrame, summary: pd.DataFrame, top_intents: pd.DataFrame,
                   allowed: dict[str, list[str]], backend, render, description: str, seed: int,
                   max_attempts: int = 2) -> tuple[pd.DataFrame, dict]:
    """Rule-based profiles overlaid with validated LLM answers; returns the table and accounting."""
    profiles = rule_profiles.set_index("user_id")
    summary = summary[summary["user_id"].isin(profiles.index)]
    intents = {user: list(zip(group["intent"], group["share"])) for user, group in top_intents.groupby("user_id")}
    conversations = {
        row.user_id: [{"role": "user", "content": render(
            dataset_description=description, n_events=row.n_events, n_weeks=row.n_weeks,
            top_intents=intents.get(row.user_id, []), office_hours_share=row.office_hours_share,
            night_share=row.night_share, weekend_share=row.weekend_share, allowed=allowed)}]
        for row in summary.itertuples()
    }
    answers: dict[str, dict] = {}
    pending = list(conversations)
    stats = {"profile_requests": 0, "profile_llm_calls": 0, "profile_valid_first": 0}
    for attempt in range(max_attempts):
        if not pending:
            break
        requests = [LLMRequest(tuple(conversations[u]), Sampling(temperature=0.0, max_tokens=160, seed=seed + attempt), None)
                    for u in pending]
        responses = backend.complete(requests)
        still = []
        for user, response in zip(pending, responses):
            stats["profile_requests"] += 1
            stats["profile_llm_calls"] += not response.cached
            values, errors = parse_profile(response.text if response.error is None else "", allowed)
            answers[user] = values
            if attempt == 0 and not errors:
                stats["profile_valid_first"] += 1
            if errors:
                still.append(user)
                conversations[user] += [{"role": "assistant", "content": response.text},
                                        {"role": "user", "content": "Not valid: " + "; ".join(errors)
                                         + ". Answer again with the JSON object only."}]
        pending = still
    model = f"llm:{backend.model}"
    for user, values in answers.items():
        for attribute in allowed:
            if attribute in values:
                profiles.loc[user, attribute] = values[attribute]
                profiles.loc[user, f"{attribute}_source"] = f"inferred:{model}"
            elif profiles.loc[user, f"{attribute}_source"] != "unknown":
                profiles.loc[user, f"{attribute}_source"] += f" ({model} answer invalid)"
    return profiles.reset_index(), stats
