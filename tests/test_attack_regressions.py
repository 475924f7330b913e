"""Holes found by attack (issue "Correctness holes found by attack"), each through the assets:
partition selection independent of registration order, the LLM cache storing every answer as
it arrives, one user's edit costing LLM calls for that user only, failed weeks retried with
their failures kept, long keys redacted, too many partitions refused."""

from __future__ import annotations

import gzip
import shutil

import pandas as pd
import pytest

from bgen_assets.catalog import Catalog
from bgen_assets.config import MODELS_DIR, load_project
from bgen_assets.llm import LLMResponse
from bgen_assets.llm.cache import CachedBackend
from bgen_assets.testing.loopback_server import serve, stats
from bgen_assets.runs import RunFailed, Runner
from conftest import built_on_copied_data, project_instance, read_gz_lines, write_project
from test_behaviorgen_loopback import declare
from test_openai_backend import request


def only_loopback_generator(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models)
    for declaration in (models / "generators").glob("*.yml"):
        declaration.unlink()
    return models


def test_an_early_week_registered_last_still_builds_every_stale_week(tmp_path, fixture_data):
    with built_on_copied_data(tmp_path, fixture_data) as (runner, data):
        lines = read_gz_lines(data / "tokyo_checkins.csv.gz")
        row = next(line for line in lines if line.startswith("1004,")).rstrip("\n").split(",")
        row[1] = "2018-12-20 12:00:00"  # a week before every registered week: registered last
        (data / "tokyo_checkins.csv.gz").write_bytes(gzip.compress("".join([*lines, ",".join(row) + "\n"]).encode()))
        runner.build_shared()
        assert runner.instance.get_dynamic_partitions("tokyo_weeks")[-1] == "2018-12-17"
        done = runner.materialize_user("tokyo", "1004", "markov")
        status = runner.synthetic_status("tokyo", "markov", ["1004"], None)
        assert done["tokyo/synthetic_markov"] == len(status) > 0  # the count printed is the count built
        assert not status["stale"].any() and "2018-12-17" in set(status["week"])
        logged = runner.warehouse.query("SELECT week FROM tokyo.synthetic_markov_log WHERE user_id = '1004'")
        assert set(logged["week"]) == set(status["week"])


class DiesAfter:
    """A backend that answers `n` requests one by one, then its process 'dies'."""
    name, model = "dies", "after"

    def __init__(self, n: int):
        self.n = n

    def complete(self, requests, on_response=None):
        answers = [LLMResponse(text=f"answer {i}", prompt_tokens=1, completion_tokens=1, latency_s=0.0,
                               finish_reason="stop") for i in range(min(self.n, len(requests)))]
        for i, answer in enumerate(answers):
            on_response(i, answer)
        if len(requests) > self.n:
            raise KeyboardInterrupt
        return answers


def test_the_cache_keeps_every_answer_that_arrived_before_a_kill(tmp_path):
    cached = CachedBackend(DiesAfter(8), tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        cached.complete([request(i) for i in range(13)])
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 8
    resumed = CachedBackend(DiesAfter(13), tmp_path / "cache").complete([request(i) for i in range(13)])
    assert [r.cached for r in resumed] == [True] * 8 + [False] * 5


def move_events(data, user: str, source: str, target: str, n: int) -> None:
    """Relabel `n` of the user's check-ins at `source` as `target` (same intent) in the raw file."""
    path = data / "tokyo_checkins.csv.gz"
    events = pd.read_csv(path, dtype=str)
    rows = events.index[(events["user_id"] == user) & (events["venue_category"] == source)][:n]
    assert len(rows) == n
    events.loc[rows, "venue_category"] = target
    events.to_csv(path, index=False)


def test_one_users_edit_costs_llm_calls_for_that_user_only(tmp_path, fixture_data, monkeypatch):
    monkeypatch.setenv("BGEN_TEST_API_KEY", "sk-test-not-a-secret")
    models = only_loopback_generator(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(fixture_data, data)
    project = load_project(write_project(tmp_path, data))
    edited, untouched = "1004", ["638", "1032"]
    with serve() as base_url, project_instance(tmp_path / "dagster") as instance:
        declare(models, base_url, max_attempts=1)
        runner = Runner.for_project(project, instance, Catalog(project, models))
        runner.build_shared()
        for user in [edited, *untouched]:
            assert runner.materialize_user("tokyo", user, "bg_loopback", max_weeks=3)["tokyo/synthetic_bg_loopback"] == 3

        def counts():
            return runner.warehouse.query("SELECT location, count(*) AS n FROM tokyo.events GROUP BY location") \
                .set_index("location")["n"]

        # every store here is Shop & Service, so no user's profile changes; the first edit moves
        # one event, the second swaps the ranks of Bookstore and Supermarket in the dataset's counts
        for target, moved, swapped in (("Supermarket", 1, False), ("Bookstore", 8, True)):
            move_events(data, edited, "Convenience Store", target, moved)
            runner.build_shared()
            assert (counts()["Bookstore"] > counts()["Supermarket"]) == swapped
            for user in untouched:
                requests = stats(base_url)["chat_requests"]
                done = runner.materialize_user("tokyo", user, "bg_loopback", max_weeks=3)
                assert done["tokyo/synthetic_bg_loopback"] == 0, (user, moved)
                assert stats(base_url)["chat_requests"] == requests, (user, moved)
            assert runner.materialize_user("tokyo", edited, "bg_loopback", max_weeks=3)["tokyo/synthetic_bg_loopback"] == 3
            assert not runner.synthetic_status("tokyo", "bg_loopback", [edited, *untouched], 3)["stale"].any()


def test_failed_weeks_are_retried_on_the_next_run_and_their_failures_kept(tmp_path, fixture_data, monkeypatch):
    monkeypatch.setenv("BGEN_TEST_API_KEY", "sk-test-not-a-secret")
    models = only_loopback_generator(tmp_path)
    project = load_project(write_project(tmp_path, fixture_data))
    with serve(per_prompt=["500"]) as base_url, project_instance(tmp_path / "dagster") as instance:
        declare(models, base_url, max_attempts=1)
        (models / "generators" / "bg_loopback.yml").write_text(
            (models / "generators" / "bg_loopback.yml").read_text().replace("max_retries: 4", "max_retries: 0"))
        runner = Runner.for_project(project, instance, Catalog(project, models))
        runner.build_shared()
        assert runner.materialize_user("tokyo", "1004", "bg_loopback", max_weeks=3)["tokyo/synthetic_bg_loopback"] == 3
        first = runner.warehouse.query("SELECT * FROM tokyo.synthetic_bg_loopback_log ORDER BY week")
        assert (first["status"] == "failed").all()  # every first attempt of a prompt got HTTP 500
        # the server is healthy now (each prompt's later attempts succeed): the failed weeks count as missing
        assert runner.materialize_user("tokyo", "1004", "bg_loopback", max_weeks=3)["tokyo/synthetic_bg_loopback"] == 3
        second = runner.warehouse.query("SELECT * FROM tokyo.synthetic_bg_loopback_log ORDER BY week")
        assert (second["status"] == "ok").all() and second["llm_calls"].gt(0).all()
        assert runner.materialize_user("tokyo", "1004", "bg_loopback", max_weeks=3)["tokyo/synthetic_bg_loopback"] == 0
        # the first run's failures stay visible after the retry succeeded: its log rows, attempts and errors
        failures = runner.warehouse.query("SELECT * FROM tokyo.synthetic_bg_loopback_failures ORDER BY week")
        pd.testing.assert_frame_equal(failures.drop(columns="run_id"), first)
        assert failures["errors"].str.contains("500").all() and failures["run_id"].nunique() == 1


def test_a_long_key_echoed_by_the_server_is_redacted_before_it_is_cut(tmp_path, fixture_data, monkeypatch):
    key = "".join(chr(ord("A") + (i * 7) % 26) for i in range(437))  # no sk- prefix, longer than the kept error
    monkeypatch.setenv("BGEN_TEST_API_KEY", key)
    models = only_loopback_generator(tmp_path)
    project = load_project(write_project(tmp_path, fixture_data))
    with serve(faults=["401"]) as base_url, project_instance(tmp_path / "dagster") as instance:
        declare(models, base_url, max_attempts=1)
        runner = Runner.for_project(project, instance, Catalog(project, models))
        runner.build_shared()
        runner.materialize_user("tokyo", "1004", "bg_loopback", max_weeks=1)
    errors = " ".join(runner.warehouse.query("SELECT errors FROM tokyo.synthetic_bg_loopback_log")["errors"])
    assert "401" in errors or "uthenticat" in errors, errors
    assert key[:8] not in errors


def test_too_many_partitions_are_refused_before_anything_is_written(tmp_path, fixture_data):
    data = tmp_path / "data"
    shutil.copytree(fixture_data, data)
    events = pd.read_csv(data / "tokyo_checkins.csv.gz", dtype=str)
    crowd = pd.concat([events.iloc[:1].assign(user_id=f"u{i}") for i in range(8000)], ignore_index=True)
    pd.concat([events, crowd]).to_csv(data / "tokyo_checkins.csv.gz", index=False)  # 8,006 users x 14 weeks
    project = load_project(write_project(tmp_path, data))
    with project_instance(tmp_path / "dagster") as instance:
        runner = Runner.for_project(project, instance)
        with pytest.raises(RunFailed, match="over the 100,000 Dagster advises"):
            runner.build_shared()
        assert not instance.get_dynamic_partitions("tokyo_users")
        assert not runner.warehouse.query(
            "SELECT * FROM information_schema.tables WHERE table_schema = 'tokyo' AND table_name = 'raw_events'").shape[0]
