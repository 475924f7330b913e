"""A corpus of malformed raw inputs, each through the assets: refused with one message naming the
file, column and file line (or Parquet row), nothing downstream written; or accepted on purpose
and read correctly (README, "Data")."""

import codecs
import gzip
import io
import os
import shutil

import duckdb
import pandas as pd
import pytest

from bgen_assets.config import ConfigError, load_project
from bgen_assets.runs import Runner, RunFailed
from bgen_assets.sources import RawDataError, load_events, locate
from conftest import built_on_copied_data, project_instance, read_gz_lines, write_project

TOKYO = "tokyo_checkins.csv.gz"
UBIQLOG = "ubiqlog_app_events.csv.gz"
CITY = "city.parquet"


def tables_in(project) -> set[str]:
    if not project.warehouse_path.exists():
        return set()
    with duckdb.connect(str(project.warehouse_path), read_only=True) as con:
        return {f"{s}.{t}" for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}


def project_with(tmp_path, fixture_data, file: str, content, edit=None):
    """The fixture project on a copy of the fixture data with `file` replaced by `content` (its
    bytes, or a function that writes the path)."""
    data = tmp_path / "data"
    shutil.copytree(fixture_data, data)
    if callable(content):
        (data / file).unlink(missing_ok=True)
        content(data / file)
    else:
        (data / file).write_bytes(content)
    return load_project(write_project(tmp_path, data, edit))


def build_with(tmp_path, fixture_data, file: str, content, edit=None):
    """Build the shared assets with `file` replaced by `content`; returns the project and the
    failure message."""
    project = project_with(tmp_path, fixture_data, file, content, edit)
    with project_instance(tmp_path / "dagster") as instance:
        with pytest.raises(RunFailed) as failure:
            Runner.for_project(project, instance).build_shared()
    return project, str(failure.value)


def read_with(tmp_path, fixture_data, dataset: str, file: str, content, edit=None) -> str:
    """The message of reading the events source of `dataset` with `file` replaced by `content`,
    as the raw asset reads it (`locate`, then `load_events`), without a Dagster run."""
    project = project_with(tmp_path, fixture_data, file, content, edit)
    source = project.datasets[dataset].sources["events"]
    with pytest.raises(RawDataError) as failure:
        load_events(locate(source, project), source, project.datasets[dataset].timezone)
    return str(failure.value)


def lines_of(fixture_data, file):
    return read_gz_lines(fixture_data / file)


def replace_field(line: str, index: int, value: str, sep: str = ",") -> str:
    fields = line.rstrip("\n").split(sep)
    fields[index] = value
    return sep.join(fields) + "\n"


def gz(*lines: str) -> bytes:
    return gzip.compress("".join(lines).encode())


def symlink_loop(path):
    os.symlink(path.with_name("loop_b"), path)
    os.symlink(path, path.with_name("loop_b"))


def with_row(header, rows, index, replacement):
    """The file with data row `index` (0-based) replaced by the `replacement` text."""
    return gz(header, *rows[:index], replacement, *rows[index + 1:])


def with_field(header, rows, index, field, value):
    return with_row(header, rows, index, replace_field(rows[index], field, value))


# Tokyo columns: user_id, local_time, venue_id, venue_category, top_category; data row i is file line i + 2.
TOKYO_CASES = {
    "missing column": (lambda h, r: gz(*(",".join(l.split(",")[:4]).rstrip("\n") + "\n" for l in [h, *r])),
                       ["column 'top_category'", "missing column", "line(s) 1"]),
    "unparsable timestamp": (lambda h, r: with_field(h, r, 2, 1, "2019-13-45 25:61:00"),
                             ["column 'local_time'", "unparsable timestamp", "line(s) 4"]),
    "empty file": (lambda h, r: b"", ["the file is empty"]),
    "header only": (lambda h, r: gz(h), ["no rows"]),
    "wrong delimiter": (lambda h, r: gz(*(l.replace(",", ";") for l in [h, *r])),
                        ["wrong delimiter", "';'-separated", "line(s) 1"]),
    "non-UTF-8 bytes": (lambda h, r: gzip.compress("".join([h, *r[:3]]).encode() + b"1004,2019-01-03 10:00:00,1,Caf\xe9,"
                                                   b"Food\n" + "".join(r[3:]).encode()), ["not UTF-8", "line(s) 5"]),
    "duplicated rows": (lambda h, r: gz(h, r[0], r[1], r[1], *r[2:]), ["duplicated rows", "line(s) 4"]),
    "padded duplicate user id": (lambda h, r: gz(h, r[0], r[1], " " + r[1], *r[2:]), ["duplicated rows", "line(s) 4"]),
    "ragged row": (lambda h, r: with_row(h, r, 1, r[1].rstrip("\n") + ",extra,fields\n"),
                   ["malformed CSV", "a row of 7 fields", "line(s) 3"]),
    "short row": (lambda h, r: with_row(h, r, 1, ",".join(r[1].split(",")[:4]) + "\n"),
                  ["malformed CSV", "a row of 4 fields", "line(s) 3"]),
    "empty user id": (lambda h, r: with_field(h, r, 0, 0, ""), ["column 'user_id'", "empty user_id", "line(s) 2"]),
    "whitespace user id": (lambda h, r: with_field(h, r, 0, 0, " "), ["column 'user_id'", "empty user_id", "line(s) 2"]),
    "partition-key character in a user id": (lambda h, r: with_field(h, r, 1, 0, "10|04"),
                                             ["column 'user_id'", "'|' in a user id", "line(s) 3"]),
    "NUL byte in a location": (lambda h, r: with_field(h, r, 1, 3, "Ca\x00fe"),
                               ["column 'venue_category'", "control character (U+0000)", "line(s) 3"]),
    "quoted line break in a location": (lambda h, r: with_field(h, r, 0, 3, '"Ca\nfe"'),
                                        ["column 'venue_category'", "control character (U+000A)", "line(s) 2"]),
    "10 MB field": (lambda h, r: with_field(h, r, 1, 3, "x" * 10_000_000),
                    ["column 'venue_category'", "longer than 10,000 characters", "line(s) 3"]),
    "undeclared intent": (lambda h, r: with_field(h, r, 2, 4, "Spaceport"),
                          ["column 'top_category'", "intent 'Spaceport' is not among the source's declared `intents`",
                           "line(s) 4"]),
    "naive and offset timestamps mixed": (lambda h, r: with_field(h, r, 1, 1, r[1].split(",")[1] + "+09:00"),
                                          ["column 'local_time'", "without a UTC offset", "line(s) 2, 4, 5"]),
    "year 1900": (lambda h, r: with_field(h, r, 1, 1, "1900-01-02 10:00:00"),
                  ["column 'local_time'", "a time outside 1970-01-01", "line(s) 3"]),
    "year 2200": (lambda h, r: with_field(h, r, 2, 1, "2200-01-02 10:00:00"),
                  ["column 'local_time'", "a time outside 1970-01-01", "line(s) 4"]),
    "date-only timestamp": (lambda h, r: with_field(h, r, 1, 1, "2019-01-02"),
                            ["column 'local_time'", "a date without a time of day", "line(s) 3"]),
    "epoch timestamp": (lambda h, r: with_field(h, r, 1, 1, "1546300800"),
                        ["column 'local_time'", "unparsable timestamp '1546300800'", "line(s) 3"]),
    "column name repeated in the header": (lambda h, r: gz(h.replace("venue_id", "user_id"), *r),
                                           ["column 'user_id'", "repeated in the header", "line(s) 1"]),
    "header repeated mid-file": (lambda h, r: gz(h, r[0], r[1], h, *r[2:]), ["header is repeated", "line(s) 4"]),
    "blank line before a bad row": (lambda h, r: gz(h, r[0], "\n", replace_field(r[1], 1, "noon"), *r[2:]),
                                    ["column 'local_time'", "unparsable timestamp 'noon'", "line(s) 4"]),
    "truncated gzip": (lambda h, r: gz(h, *r)[:-20], ["not a readable gzip file"]),
    "gzip-named plain file": (lambda h, r: "".join([h, *r]).encode(), ["not a readable gzip file"]),
    "symlink loop": (lambda h, r: symlink_loop, ["a symlink loop"]),
}


@pytest.mark.parametrize("case", list(TOKYO_CASES))
def test_malformed_tokyo_file(tmp_path, fixture_data, case):
    make, expected = TOKYO_CASES[case]
    header, *rows = lines_of(fixture_data, TOKYO)
    message = read_with(tmp_path, fixture_data, "tokyo", TOKYO, make(header, rows))
    assert TOKYO in message
    for fragment in expected:
        assert fragment in message, message


def declaring(**changes):
    """An edit of the Tokyo events source's declaration (`columns` entries are added to its mapping)."""
    def edit(raw):
        events = raw["datasets"]["tokyo"]["sources"]["events"]
        events["columns"].update(changes.pop("columns", {}))
        events.update(changes)
    return edit


DECLARED_TIME_CASES = {
    "strptime %s for epoch seconds": (declaring(timestamp_format="%s"), lambda h, r: gz(h, *r),
                                      ["column 'local_time'", "timestamp_format '%s'", "epoch_s or epoch_ms"]),
    "milliseconds declared as seconds": (
        declaring(timestamp_format="epoch_s"), lambda h, r: gz(h, *(replace_field(l, 1, "1546300800000") for l in r)),
        ["column 'local_time'", "a time outside 1970-01-01", "are these seconds?", "line(s) 2"]),
    "text declared as epoch": (declaring(timestamp_format="epoch_ms"), lambda h, r: gz(h, *r),
                               ["column 'local_time'", "not a number of milliseconds since 1970", "line(s) 2"]),
    "a UTC offset column holding no offsets": (declaring(columns={"utc_offset": "top_category"}), lambda h, r: gz(h, *r),
                                               ["column 'top_category'", "not a UTC offset", "line(s) 2"]),
}


@pytest.mark.parametrize("case", list(DECLARED_TIME_CASES))
def test_declared_time_formats_refuse_what_they_cannot_read(tmp_path, fixture_data, case):
    edit, make, expected = DECLARED_TIME_CASES[case]
    header, *rows = lines_of(fixture_data, TOKYO)
    message = read_with(tmp_path, fixture_data, "tokyo", TOKYO, make(header, rows), edit)
    assert TOKYO in message
    for fragment in expected:
        assert fragment in message, message


def city_checkins(fixture_data) -> pd.DataFrame:
    tokyo = pd.read_csv(fixture_data / TOKYO, dtype=str).head(200)
    return pd.DataFrame({"uid": tokyo["user_id"], "when": tokyo["local_time"],
                         "place": tokyo["venue_category"], "activity": tokyo["top_category"]})


def declare_city(raw):
    raw["datasets"] = {"city": {"timezone": "Asia/Tokyo", "sources": {"events": {
        "file": CITY, "format": "parquet",
        "columns": {"user_id": "uid", "ts": "when", "location": "place", "intent": "activity"}}}}}
    raw["scopes"] = {"demo": {}}


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


PARQUET_CASES = {
    "corrupt Parquet file": (lambda c: parquet_bytes(c)[:-100], ["not a readable Parquet file"]),
    "integer (epoch) timestamps": (
        lambda c: parquet_bytes(c.assign(when=pd.to_datetime(c["when"]).astype("int64") // 10**9)),
        ["column 'when'", "Parquet type int64", "timestamps or ISO 8601 text"]),
    "a column of the wrong type": (lambda c: parquet_bytes(c.assign(place=1.5)), ["column 'place'", "Parquet type float64"]),
    "unparsable timestamp named by row": (lambda c: parquet_bytes(c.assign(when=c["when"].where(c.index != 2, "noon"))),
                                          ["column 'when'", "unparsable timestamp 'noon'", "row(s) 3"]),
}


@pytest.mark.parametrize("case", list(PARQUET_CASES))
def test_malformed_parquet_file(tmp_path, fixture_data, case):
    make, expected = PARQUET_CASES[case]
    message = read_with(tmp_path, fixture_data, "city", CITY, make(city_checkins(fixture_data)), declare_city)
    assert CITY in message
    for fragment in expected:
        assert fragment in message, message
    assert "line(s)" not in message


@pytest.mark.parametrize(("change", "key"), [
    (lambda raw: raw["datasets"]["tokyo"]["sources"]["events"].update(timestamp_fmt="%Y"),
     "datasets.tokyo.sources.events.timestamp_fmt"),
    (lambda raw: raw.update(slot_minutes=-30), "slot_minutes"),
    (lambda raw: raw["datasets"]["ubiqlog"]["sources"]["events"].update(intents=["other"]),
     "datasets.ubiqlog.sources.events"),
])
def test_malformed_configuration_names_file_and_key(tmp_path, fixture_data, change, key):
    path = write_project(tmp_path, fixture_data, change)
    with pytest.raises(ConfigError) as error:
        load_project(path)
    assert str(path) in str(error.value) and key in str(error.value), error.value


def with_offsets(header, rows):
    """The same instants written at +09:00 (Tokyo) on odd data rows and in UTC on even ones."""
    def in_utc(local: str) -> str:
        return f"{pd.Timestamp(local) - pd.Timedelta(hours=9):%Y-%m-%d %H:%M:%S}+00:00"

    local_times = [row.split(",")[1] for row in rows]
    return [header, *(replace_field(row, 1, f"{local}+09:00" if i % 2 else in_utc(local))
                      for i, (row, local) in enumerate(zip(rows, local_times)))]


# name: (file text from the header and rows, how the events differ from the unmodified file's)
ACCEPTED_CASES = {
    "byte order mark": (lambda h, r: codecs.BOM_UTF8 + "".join([h, *r]).encode(), lambda events: events),
    "CRLF line ends": (lambda h, r: "".join(l.replace("\n", "\r\n") for l in [h, *r]).encode(), lambda events: events),
    "quoted delimiter": (lambda h, r: "".join([h, replace_field(r[0], 3, '"Cafe, upstairs"'), *r[1:]]).encode(),
                         lambda events: events.assign(location=events["location"].mask(events.index == 0,
                                                                                        "Cafe, upstairs"))),
    "blank lines": (lambda h, r: "".join([h, "\n", *r, "\n\n"]).encode(), lambda events: events),
    "several UTC offsets": (lambda h, r: "".join(with_offsets(h, r)).encode(), lambda events: events),
}


@pytest.mark.parametrize("case", list(ACCEPTED_CASES))
def test_accepted_on_purpose(tmp_path, fixture_data, case):
    make, expected = ACCEPTED_CASES[case]
    header, *rows = lines_of(fixture_data, TOKYO)
    project = load_project(write_project(tmp_path, fixture_data))
    source, timezone = project.datasets["tokyo"].sources["events"], project.datasets["tokyo"].timezone
    (tmp_path / TOKYO).write_bytes(gzip.compress(make(header, rows)))
    compared = ["user_id", "ts", "end_ts", "location", "intent"]
    pd.testing.assert_frame_equal(load_events(tmp_path / TOKYO, source, timezone)[compared],
                                  expected(load_events(fixture_data / TOKYO, source, timezone))[compared])


def test_negative_duration_span(tmp_path, fixture_data):
    lines = lines_of(fixture_data, UBIQLOG)
    start = lines[3].split(",")[1]
    lines[3] = replace_field(lines[3], 2, "2013-01-01 00:00:00") if start > "2013-01-01" else lines[3]
    project, message = build_with(tmp_path, fixture_data, UBIQLOG, gz(*lines))
    assert UBIQLOG in message and "column 'end_ts'" in message and "negative duration" in message
    assert "line(s) 4" in message
    assert not {"ubiqlog.raw_events", "ubiqlog.app_sessions", "ubiqlog.events"} & tables_in(project)


def test_profile_for_unknown_user(tmp_path, fixture_data):
    profiles = "user_id,age_group,gender\n1004,25-34,female\nnobody,35-44,male\n"

    def declare_profiles(raw):
        raw["datasets"]["tokyo"]["sources"]["profiles"] = {"kind": "profiles", "file": "tokyo_profiles.csv.gz"}

    project, message = build_with(tmp_path, fixture_data, "tokyo_profiles.csv.gz", gz(profiles), declare_profiles)
    assert "tokyo_profiles.csv.gz" in message and "column 'user_id'" in message
    assert "unknown user 'nobody'" in message and "line(s) 3" in message
    written = tables_in(project)
    assert "tokyo.events" in written  # upstream of profiles is fine
    assert "tokyo.profiles" not in written and "tokyo.weekly_segments" not in written


def tokyo_table_contents(runner) -> dict[str, tuple]:
    tables = runner.warehouse.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'tokyo'")
    return {table: tuple(runner.warehouse.query(
        f'SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR FROM tokyo."{table}" t').iloc[0])
        for table in tables["table_name"]}


def test_a_failed_rebuild_leaves_the_warehouse_as_it_was(tmp_path, fixture_data):
    """Refused at ingest (a padded user id duplicating a row): no table changes. Refused by the
    `events` schema (one check-in with two intents): `events` and all built from it are kept."""
    with built_on_copied_data(tmp_path, fixture_data) as (runner, data):
        before = tokyo_table_contents(runner)
        header, *rows = lines_of(data, TOKYO)
        (data / TOKYO).write_bytes(gz(header, *rows, " " + rows[0]))
        with pytest.raises(RunFailed, match="duplicated rows"):
            runner.build_shared()
        assert tokyo_table_contents(runner) == before

        (data / TOKYO).write_bytes(gz(header, *rows, replace_field(rows[0], 4, "Event")))
        with pytest.raises(RunFailed, match="tokyo.*events.*fails its schema"):
            runner.build_shared()
        after = tokyo_table_contents(runner)
        assert after.pop("raw_events") != before.pop("raw_events")  # the file's new rows, as read
        assert after == before


# One refusal of each kind through the assets (a whole-file, a line and a Parquet problem): the run
# fails with the reader's message and writes no table of the dataset. The reader runs before any
# write, so the other cases above need no run of their own.
@pytest.mark.parametrize("case", ["truncated gzip", "undeclared intent", "a column of the wrong type"])
def test_a_refused_file_fails_the_run_and_writes_nothing(tmp_path, fixture_data, case):
    if case in TOKYO_CASES:
        (make, expected), dataset, file, edit = TOKYO_CASES[case], "tokyo", TOKYO, None
        header, *rows = lines_of(fixture_data, TOKYO)
        content = make(header, rows)
    else:
        (make, expected), dataset, file, edit = PARQUET_CASES[case], "city", CITY, declare_city
        content = make(city_checkins(fixture_data))
    project, message = build_with(tmp_path, fixture_data, file, content, edit)
    for fragment in [file, *expected]:
        assert fragment in message, message
    written = tables_in(project)
    assert not {t for t in written if t.startswith(f"{dataset}.")}, written
