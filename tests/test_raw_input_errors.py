"""Malformed raw files fail the raw asset with the file, column and line named, and
nothing downstream is written."""

import gzip
import shutil

import duckdb
import pytest

from bgen_assets.config import load_project
from bgen_assets.runs import Runner, RunFailed
from conftest import project_instance, read_gz_lines, write_project

TOKYO = "tokyo_checkins.csv.gz"
UBIQLOG = "ubiqlog_app_events.csv.gz"


def tables_in(project) -> set[str]:
    if not project.warehouse_path.exists():
        return set()
    with duckdb.connect(str(project.warehouse_path), read_only=True) as con:
        return {f"{s}.{t}" for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}


def build_with(tmp_path, fixture_data, file: str, content: bytes, edit=None):
    data = tmp_path / "data"
    shutil.copytree(fixture_data, data)
    (data / file).write_bytes(gzip.compress(content))
    project = load_project(write_project(tmp_path, data, edit))
    with project_instance(tmp_path / "dagster") as instance:
        with pytest.raises(RunFailed) as failure:
            Runner.for_project(project, instance).build_shared()
    return project, str(failure.value)


def lines_of(fixture_data, file):
    return read_gz_lines(fixture_data / file)


def replace_field(line: str, index: int, value: str, sep: str = ",") -> str:
    fields = line.rstrip("\n").split(sep)
    fields[index] = value
    return sep.join(fields) + "\n"


def tokyo_cases(lines):
    header, rows = lines[0], lines[1:]
    no_top = ["".join(",".join(l.rstrip("\n").split(",")[:4]) + "\n" for l in lines)]
    return {
        "missing column": ("".join(no_top).encode(), ["column 'top_category'", "missing column", "line(s) 1"]),
        "unparsable timestamp": (
            "".join([header, rows[0], rows[1], replace_field(rows[2], 1, "2019-13-45 25:61:00"), *rows[3:]]).encode(),
            ["column 'local_time'", "unparsable timestamp", "line(s) 4"]),
        "empty file": (b"", ["the file is empty"]),
        "header only": (header.encode(), ["no rows"]),
        "wrong delimiter": ("".join(l.replace(",", ";") for l in lines).encode(),
                            ["wrong delimiter", "';'-separated", "line(s) 1"]),
        "non-UTF-8 bytes": ("".join(lines[:4]).encode() + b"1004,2019-01-03 10:00:00,1,Caf\xe9,Food\n"
                            + "".join(lines[4:]).encode(), ["not UTF-8", "line(s) 5"]),
        "duplicated rows": ("".join([header, rows[0], rows[1], rows[1], *rows[2:]]).encode(),
                            ["duplicated rows", "line(s) 4"]),
        "ragged row": ("".join([header, rows[0], rows[1].rstrip("\n") + ",extra,fields\n", *rows[2:]]).encode(),
                       ["malformed CSV", "a row of 7 fields", "line(s) 3"]),
        "empty user id": ("".join([header, replace_field(rows[0], 0, " "), *rows[1:]]).encode(),
                          ["column 'user_id'", "empty user_id", "line(s) 2"]),
    }


@pytest.mark.parametrize("case", ["missing column", "unparsable timestamp", "empty file", "header only",
                                  "wrong delimiter", "non-UTF-8 bytes", "duplicated rows", "ragged row",
                                  "empty user id"])
def test_malformed_tokyo_file(tmp_path, fixture_data, case):
    content, expected = tokyo_cases(lines_of(fixture_data, TOKYO))[case]
    project, message = build_with(tmp_path, fixture_data, TOKYO, content)
    assert TOKYO in message
    for fragment in expected:
        assert fragment in message, message
    written = tables_in(project)
    assert not {t for t in written if t.startswith("tokyo.")}, written


def test_negative_duration_span(tmp_path, fixture_data):
    lines = lines_of(fixture_data, UBIQLOG)
    start = lines[3].split(",")[1]
    lines[3] = replace_field(lines[3], 2, "2013-01-01 00:00:00") if start > "2013-01-01" else lines[3]
    project, message = build_with(tmp_path, fixture_data, UBIQLOG, "".join(lines).encode())
    assert UBIQLOG in message and "column 'end_ts'" in message and "negative duration" in message
    assert "line(s) 4" in message
    assert not {"ubiqlog.raw_events", "ubiqlog.app_sessions", "ubiqlog.events"} & tables_in(project)


def test_profile_for_unknown_user(tmp_path, fixture_data):
    profiles = "user_id,age_group,gender\n1004,25-34,female\nnobody,35-44,male\n"

    def declare_profiles(raw):
        raw["datasets"]["tokyo"]["sources"]["profiles"] = {"kind": "profiles", "file": "tokyo_profiles.csv.gz"}

    project, message = build_with(tmp_path, fixture_data, "tokyo_profiles.csv.gz", profiles.encode(), declare_profiles)
    assert "tokyo_profiles.csv.gz" in message and "column 'user_id'" in message
    assert "unknown user 'nobody'" in message and "line(s) 3" in message
    written = tables_in(project)
    assert "tokyo.events" in written  # upstream of profiles is fine
    assert "tokyo.profiles" not in written and "tokyo.weekly_segments" not in written
