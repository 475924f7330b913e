"""Profile inference by an LLM (the offline SmolLM2): whatever it answers, every value kept is
an allowed one and says where it comes from; invalid answers fall back to the rules."""

import pytest

from bgen_assets.profile_inference import parse_profile

ALLOWED = {"gender": ["female", "male"], "consumption_level": ["low", "medium", "high"]}


def test_parse_keeps_only_allowed_values():
    values, errors = parse_profile('Sure! {"gender": "female", "consumption_level": "huge"} done', ALLOWED)
    assert values == {"gender": "female"}
    assert errors == ["consumption_level: 'huge' is not one of ['low', 'medium', 'high']"]
    assert parse_profile("no json here", ALLOWED) == ({}, ["no JSON object in the answer"])
    assert parse_profile("{not json}", ALLOWED)[1][0].startswith("invalid JSON")


@pytest.mark.slow
def test_llm_profiles_are_validated_and_marked(built):
    from bgen_assets.assets.users import llm_profiles
    from bgen_assets.domain import PROFILE_ATTRIBUTES

    rules = built.warehouse.query("SELECT * FROM tokyo.inferred_profiles ORDER BY user_id").head(3)
    table, stats = llm_profiles(built.project, "tokyo", built.warehouse, rules)
    allowed = built.warehouse.query("SELECT attribute, value FROM seeds.profile_values")
    assert stats["profile_requests"] >= 3 and stats["profile_requests"] <= 6  # one re-ask at most
    for row in table.itertuples():
        for attribute in PROFILE_ATTRIBUTES:
            value, source = getattr(row, attribute), getattr(row, f"{attribute}_source")
            if source.startswith("inferred:llm:"):
                assert ((allowed.attribute == attribute) & (allowed.value == value)).any()
            else:
                rule = rules.set_index("user_id").loc[row.user_id]
                assert value == rule[attribute] and source.startswith(rule[f"{attribute}_source"])
