"""A new dataset is a declaration: a Parquet file with its own column names and UTC offsets,
mapped in the project file, flows through the same assets."""

import pandas as pd
import pytest

from bgen_assets.catalog import Catalog
from bgen_assets.config import ColumnMapping, ConfigError, SourceFile, load_project
from bgen_assets.generators import load_generator_specs
from bgen_assets.runs import Runner, RunFailed
from bgen_assets.sources import RawDataError, load_all_events, load_events, locate_all
from conftest import project_instance, write_project


def city_project(folder, events: dict, **dataset):
    """The fixture project with one dataset, `city` (Tokyo's timezone), reading `events` from
    `folder`; `dataset` adds to its declaration."""
    def declare(raw):
        raw["datasets"] = {"city": {"timezone": "Asia/Tokyo", **dataset, "sources": {"events": events}}}
        raw["scopes"] = {"demo": {}}

    return load_project(write_project(folder, folder, declare))


def test_parquet_dataset_with_offsets_is_a_declaration(tmp_path, fixture_data):
    tokyo = pd.read_csv(fixture_data / "tokyo_checkins.csv.gz", dtype=str).head(600)
    local = pd.to_datetime(tokyo["local_time"])
    pd.DataFrame({
        "uid": tokyo["user_id"],
        "when": local.dt.tz_localize("Asia/Tokyo").dt.tz_convert("UTC"),  # stored in UTC
        "place": tokyo["venue_category"],
        "activity": tokyo["top_category"],
    }).to_parquet(tmp_path / "city.parquet")

    project = city_project(tmp_path, {"file": "city.parquet", "format": "parquet", "utc_times": True, "columns": {
        "user_id": "uid", "ts": "when", "location": "place", "intent": "activity"}}, description="A city's check-ins.")
    with project_instance(tmp_path / "dagster") as instance:
        runner = Runner.for_project(project, instance)
        runner.build_shared()
        events = runner.warehouse.query("SELECT * FROM city.events ORDER BY user_id, ts, location")
        assert len(events) == 600
        expected = local.sort_values().reset_index(drop=True)
        assert sorted(events["ts"]) == list(expected)  # back in local time
        assert (events["weekday"] == events["ts"].dt.weekday).all()
        assert runner.materialize_user("city", "1004", "markov")["city/synthetic_markov"] > 0


def test_unknown_timezone_is_refused(tmp_path, fixture_data):
    def declare(raw):
        raw["datasets"]["tokyo"]["timezone"] = "Mars/Olympus"

    try:
        load_project(write_project(tmp_path, fixture_data, declare))
    except ConfigError as error:
        assert "datasets.tokyo.timezone" in str(error) and "Mars/Olympus" in str(error)
    else:
        raise AssertionError("an unknown timezone was accepted")


def test_epoch_times_with_per_row_offsets_become_each_rows_local_time(tmp_path):
    utc = pd.Series(pd.to_datetime(["2019-01-07 01:00:00", "2019-01-07 23:30:00", "2019-01-08 12:00:00"]))
    nanoseconds = utc.astype("int64")
    pd.DataFrame({"uid": ["a", "a", "b"], "seconds": nanoseconds // 10**9, "ms": nanoseconds // 10**6,
                  "offset": ["540", "+09:00", "-300"], "place": ["Cafe", "Office", "Park"],
                  "activity": ["Food", "Work", "Outdoors"]}).to_csv(tmp_path / "trace.csv", index=False)

    def read(ts: str, fmt: str, utc_offset: str | None):
        columns = ColumnMapping(user_id="uid", ts=ts, location="place", intent="activity", utc_offset=utc_offset)
        return list(load_events(tmp_path / "trace.csv", SourceFile(file="trace.csv", timestamp_format=fmt,
                                                                    columns=columns), "Asia/Tokyo")["ts"])

    each_rows_own = list(utc + pd.to_timedelta([540, 540, -300], unit="min"))  # Tokyo, Tokyo, New York in winter
    assert read("seconds", "epoch_s", "offset") == each_rows_own
    assert read("ms", "epoch_ms", "offset") == each_rows_own
    assert read("seconds", "epoch_s", None) == list(utc + pd.Timedelta(hours=9))  # the dataset's timezone


def test_a_source_of_several_files_is_read_as_one(tmp_path, fixture_data):
    tokyo = pd.read_csv(fixture_data / "tokyo_checkins.csv.gz", dtype=str).head(600)
    january = tokyo["local_time"] < "2019-02-01"
    tokyo[january].to_csv(tmp_path / "checkins_2019-01.csv", index=False)
    tokyo[~january].to_csv(tmp_path / "checkins_2019-02.csv", index=False)

    project = city_project(tmp_path, {"file": "checkins_*.csv", "columns": {
        "user_id": "user_id", "ts": "local_time", "location": "venue_category", "intent": "top_category"}})
    with project_instance(tmp_path / "dagster") as instance:
        runner = Runner.for_project(project, instance)
        runner.build_shared()
        files = runner.warehouse.query("SELECT source_file, count(*) AS n FROM city.raw_events GROUP BY 1 ORDER BY 1")
        assert files.to_dict("list") == {"source_file": ["checkins_2019-01.csv", "checkins_2019-02.csv"],
                                         "n": [int(january.sum()), int((~january).sum())]}
        assert runner.warehouse.query("SELECT count(*) AS n FROM city.events")["n"].iloc[0] == 600
        # a dataset no declaration names gets only the generators that are not on request (no LLM, no GPU)
        everyday = {spec.name for spec in load_generator_specs() if not spec.on_request}
        assert set(runner.generator_names("city")) == everyday and "behavior_lora" not in everyday
        assert set(runner.user_generators("city", "1004", None)) == everyday

    # a row of the first file repeated in the second: named by file and line
    with open(tmp_path / "checkins_2019-02.csv", "a") as second:
        second.write(",".join(tokyo[january].iloc[4]) + "\n")
    source = project.datasets["city"].sources["events"]
    with pytest.raises(RawDataError, match=r"checkins_2019-02\.csv.*line \d+ repeats line 6 of checkins_2019-01\.csv"):
        load_all_events(locate_all(source, project), source, "Asia/Tokyo")


def test_a_second_events_source_is_refused_with_the_way_to_declare_several_files(tmp_path, fixture_data):
    def declare(raw):
        sources = raw["datasets"]["tokyo"]["sources"]
        sources["more_events"] = dict(sources["events"], file="more.csv.gz")

    with pytest.raises(ConfigError, match="a second events source \\(more_events\\).*glob pattern"):
        load_project(write_project(tmp_path, fixture_data, declare))


def declare_visits(tmp_path, fixture_data, rows: int, keep=(), **dataset):
    """A check-in dataset `city` with fine venue categories only (no intent column), keeping the
    `keep` columns; returns the fixture rows it holds and the project."""
    tokyo = pd.read_csv(fixture_data / "tokyo_checkins.csv.gz", dtype=str).head(rows)
    tokyo.drop(columns=["top_category"]).to_csv(tmp_path / "visits.csv", index=False)
    return tokyo, city_project(tmp_path, {"file": "visits.csv", "columns": {
        "user_id": "user_id", "ts": "local_time", "location": "venue_category", "keep": list(keep)}}, **dataset)


def test_fine_categories_get_foursquare_top_level_intents_by_declaration(tmp_path, fixture_data):
    tokyo, project = declare_visits(tmp_path, fixture_data, 400, keep=["venue_id"], sql_models=["foursquare"])
    with project_instance(tmp_path / "dagster") as instance:
        runner = Runner.for_project(project, instance)
        runner.build_shared()
        events = runner.warehouse.query("SELECT user_id, ts, location, intent, venue_id FROM city.events")
        raw_venues = runner.warehouse.query("SELECT venue_id FROM city.raw_events")["venue_id"]
    expected = dict(zip(tokyo["venue_category"], tokyo["top_category"]))
    assert len(events) == 400 and (events["intent"] == events["location"].map(expected)).all()
    # the kept column reaches the raw and the normalised events, row for row
    assert sorted(raw_venues) == sorted(events["venue_id"]) == sorted(tokyo["venue_id"])


def test_a_dataset_without_intents_is_told_which_lines_and_what_to_declare(tmp_path, fixture_data):
    _, project = declare_visits(tmp_path, fixture_data, 50)
    with project_instance(tmp_path / "dagster") as instance:
        with pytest.raises(RunFailed) as failure:
            Runner.for_project(project, instance).build_shared()
    message = str(failure.value)
    assert "column 'intent' fails not_nullable" in message
    assert "from the raw file(s): visits.csv line 2, visits.csv line 3" in message  # file lines, not table rows
    assert "`columns: intent:`" in message and "models/city/events.sql" in message


def test_an_undeclared_model_folder_is_named(tmp_path, fixture_data):
    _, project = declare_visits(tmp_path, fixture_data, 5, sql_models=["foursquarr"])
    with pytest.raises(ConfigError, match=r"datasets\.city\.sql_models: no folder .*foursquarr"):
        Catalog(project).model_files("city")


def test_a_kept_column_may_not_take_a_name_bgen_uses(tmp_path, fixture_data):
    with pytest.raises(ConfigError, match="keep: weekday is a column name bgen uses"):
        declare_visits(tmp_path, fixture_data, 5, keep=["weekday"])


def test_times_marked_utc_are_converted_or_read_as_local_only_as_declared(tmp_path):
    pd.DataFrame({"uid": ["a", "a"], "at": ["2019-01-07T01:00:00Z", "2019-01-07T23:30:00+00:00"],
                  "place": ["Cafe", "Bar"], "activity": ["Food", "Nightlife"]}).to_csv(tmp_path / "utc.csv", index=False)
    columns = ColumnMapping(user_id="uid", ts="at", location="place", intent="activity")

    def read(utc_times):
        return list(load_events(tmp_path / "utc.csv", SourceFile(file="utc.csv", utc_times=utc_times, columns=columns),
                                "Asia/Tokyo")["ts"])

    written = [pd.Timestamp("2019-01-07 01:00:00"), pd.Timestamp("2019-01-07 23:30:00")]
    assert read(True) == [t + pd.Timedelta(hours=9) for t in written]
    assert read(False) == written  # local times mislabelled UTC: as written
    with pytest.raises(RawDataError, match=r"column 'at'; line\(s\) 2, 3: every timestamp is marked UTC .*utc_times"):
        read(None)  # undeclared: refused, not shifted silently
