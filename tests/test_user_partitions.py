"""Materialising one user, re-running it, and what becomes stale after a change."""

import dataclasses
import gzip
import shutil

import yaml
from dagster import AssetKey

from bgen_assets.catalog import Catalog
from bgen_assets.config import MODELS_DIR, ScopeSelection
from bgen_assets.runs import Runner
from conftest import built_on_copied_data, read_gz_lines

SYNTHETIC = AssetKey(["tokyo", "synthetic_markov"])
SEGMENTS = AssetKey(["tokyo", "weekly_segments"])
MODEL = AssetKey(["tokyo", "markov_model"])


def synthetic_rows(runner, user):
    return runner.warehouse.query(
        "SELECT count(*) AS n, sum(hash(t)::HUGEINT)::VARCHAR AS h FROM tokyo.synthetic_markov t WHERE user_id = ?", [user]
    ).iloc[0].tolist()


def visible_weeks(runner, user):
    """The user's real weeks whose events are all pretraining or fine-tune train data."""
    return runner.warehouse.query(
        "SELECT week FROM tokyo.weekly_segments WHERE user_id = ? GROUP BY week "
        "HAVING bool_and(part IN ('pretrain', 'train')) ORDER BY week", [user])["week"].tolist()


def stale_weeks(runner, user):
    status = runner.synthetic_status("tokyo", "markov", [user], None)
    return status.loc[status["stale"], "week"].tolist()


def test_single_user_command_runs_on_request_generators_only_where_their_scope_says(built):
    demo = {"tokyo": ScopeSelection(users=["1004", "638"], max_weeks_per_user=4)}
    scoped = dataclasses.replace(built, project=built.project.model_copy(update={"scopes": {**built.project.scopes, "demo": demo}}))
    # BehaviorGen's declaration names 1004 (2 weeks) and not 638; markov is built for any user, on all weeks
    assert scoped.user_generators("tokyo", "1004", None)["behaviorgen"] == 2
    assert scoped.user_generators("tokyo", "1004", None)["markov"] is None
    assert "behaviorgen" not in scoped.user_generators("tokyo", "638", None)
    assert scoped.user_generators("tokyo", "1004", 1)["behaviorgen"] == 1


def test_single_user_materialises_exactly_that_user(built):
    others = built.warehouse.query("SELECT DISTINCT user_id FROM tokyo.synthetic_markov_log")["user_id"].tolist() \
        if built.instance.get_materialized_partitions(SYNTHETIC) else []  # other tests' users, if any
    segments_before = built.instance.get_materialized_partitions(SEGMENTS)
    synthetic_before = built.instance.get_materialized_partitions(SYNTHETIC)
    ubiqlog_before = built.instance.get_materialized_partitions(AssetKey(["ubiqlog", "synthetic_markov"]))
    segments_built = int("1004" not in segments_before)  # another test may have built 1004's segments
    # and some of 1004's weeks, which it cannot without the segments
    stale_before = None if segments_built else stale_weeks(built, "1004")
    done = built.materialize_user("tokyo", "1004", "markov")
    visible = visible_weeks(built, "1004")
    stale_before = visible if stale_before is None else stale_before
    assert done == {"tokyo/weekly_segments": segments_built, "tokyo/synthetic_markov": len(stale_before)}
    added = built.instance.get_materialized_partitions(SYNTHETIC) - synthetic_before
    # the range run also covers the user's weeks without events in between (empty partitions)
    assert {f"1004|{week}" for week in stale_before} <= added and all(key.startswith("1004|") for key in added)
    logged = built.warehouse.query("SELECT week FROM tokyo.synthetic_markov_log WHERE user_id = '1004' ORDER BY week")
    assert logged["week"].tolist() == visible  # validation and test weeks are never conditioned on
    assert built.instance.get_materialized_partitions(SEGMENTS) - segments_before <= {"1004"}
    assert built.instance.get_materialized_partitions(AssetKey(["ubiqlog", "synthetic_markov"])) == ubiqlog_before
    assert set(built.warehouse.query("SELECT DISTINCT user_id FROM tokyo.synthetic_markov_log")["user_id"]) == {"1004", *others}

    before = synthetic_rows(built, "1004")
    assert before[0] > 0
    assert built.materialize_user("tokyo", "1004", "markov") == {"tokyo/weekly_segments": 0, "tokyo/synthetic_markov": 0}
    assert synthetic_rows(built, "1004") == before


def test_a_change_to_one_users_raw_events_makes_only_that_user_stale(tmp_path, fixture_data):
    with built_on_copied_data(tmp_path, fixture_data) as (runner, data):
        split = runner.warehouse.query("SELECT * FROM tokyo.user_split ORDER BY user_id")
        changed = split[split.role == "individual"].user_id.iloc[0]  # population users would change the fit
        untouched = split[split.user_id != changed].user_id.iloc[0]
        for user in (changed, untouched):
            runner.materialize_user("tokyo", user, "markov")
        untouched_rows = synthetic_rows(runner, untouched)

        lines = read_gz_lines(data / "tokyo_checkins.csv.gz")
        row = next(i for i, line in enumerate(lines) if line.startswith(f"{changed},"))
        fields = lines[row].rstrip("\n").split(",")
        fields[3], fields[4] = "Ramen Restaurant", "Food"
        lines[row] = ",".join(fields) + "\n"
        (data / "tokyo_checkins.csv.gz").write_bytes(gzip.compress("".join(lines).encode()))

        runner.build_shared()
        for user in (changed, untouched):
            runner._materialize([SEGMENTS], partition_key=user)
        assert stale_weeks(runner, untouched) == []
        assert stale_weeks(runner, changed) == visible_weeks(runner, changed)

        done = runner.materialize_user("tokyo", untouched, "markov")
        # the model is refitted (its input changed) to the same data version: no partition is redone
        assert done == {"tokyo/markov_model": 1, "tokyo/weekly_segments": 0, "tokyo/synthetic_markov": 0}
        assert synthetic_rows(runner, untouched) == untouched_rows
        assert runner.materialize_user("tokyo", changed, "markov")["tokyo/synthetic_markov"] == len(visible_weeks(runner, changed))
        assert stale_weeks(runner, changed) == []


def test_editing_one_sql_model_makes_only_that_model_stale(built, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    (models / "ubiqlog" / "events.sql").write_text(
        (models / "ubiqlog" / "events.sql").read_text().replace("SELECT", "SELECT DISTINCT", 1))
    edited = Runner.for_project(built.project, built.instance, Catalog(built.project, models))
    stale = {key.to_user_string() for key in edited.shared_keys() if edited.stale_or_missing(key)}
    assert stale == {"ubiqlog/events"}


def test_a_second_build_rebuilds_nothing(built):
    def last_runs() -> dict:
        return {key: built.instance.get_latest_materialization_event(key).run_id for key in built.shared_keys()}

    before = last_runs()
    assert built.build_shared() == []  # the sources are observed again, unchanged
    assert last_runs() == before


def test_editing_a_generator_declarations_params_makes_its_partitions_stale(built, tmp_path):
    built.materialize_user("tokyo", "1004", "markov")
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    declaration = models / "generators" / "markov.yml"

    def edited(change) -> Runner:
        fields = yaml.safe_load(declaration.read_text())
        change(fields)
        declaration.write_text(yaml.safe_dump(fields))
        return Runner.for_project(built.project, built.instance, Catalog(built.project, models))

    reworded = edited(lambda fields: fields.update(description="Reworded: what it says does not change its output."))
    assert stale_weeks(reworded, "1004") == [] and not reworded.stale_or_missing(MODEL)
    reweighted = edited(lambda fields: fields["params"].update(user_weight=5.0))
    assert stale_weeks(reweighted, "1004") == visible_weeks(built, "1004")
    assert reweighted.stale_or_missing(MODEL)
