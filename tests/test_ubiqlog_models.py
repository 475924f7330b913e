"""UbiqLog's SQL models on hand-written spans: same-package spans at most `session_gap_seconds`
(60 s) apart merge into one session, system processes are dropped, and each package is mapped
to an intent (hand seed first, then the category file's custom genre, then its genre, else
'other')."""

import gzip

import pandas as pd

from conftest import built_on_copied_data, read_gz_lines

USER = "99_F"
SPANS = [  # start, end, package
    ("2014-03-03 10:00:00", "2014-03-03 10:01:00", "com.whatsapp"),
    ("2014-03-03 10:00:30", "2014-03-03 10:00:40", "com.android.browser"),  # another package: no break
    ("2014-03-03 10:02:00", "2014-03-03 10:03:00", "com.whatsapp"),  # 60 s after the last: same session
    ("2014-03-03 10:04:01", "2014-03-03 10:05:00", "com.whatsapp"),  # 61 s after: a new session
    ("2014-03-03 10:06:00", "2014-03-03 10:07:00", "com.android.systemui"),  # the OS: no session
    ("2014-03-03 10:08:00", "2014-03-03 10:09:00", "kr.co.manhole.hujicam"),  # a genre, no custom genre
    ("2014-03-03 10:10:00", "2014-03-03 10:11:00", "org.example.unlisted"),
]


def test_sessions_merge_within_sixty_seconds_and_packages_map_to_intents(tmp_path, fixture_data):
    with built_on_copied_data(tmp_path, fixture_data) as (runner, data):
        events_file = data / "ubiqlog_app_events.csv.gz"
        rows = [f"{USER},{start},{end},{(pd.Timestamp(end) - pd.Timestamp(start)).seconds},{package},log.txt\n"
                for start, end, package in SPANS]
        events_file.write_bytes(gzip.compress("".join([*read_gz_lines(events_file), *rows]).encode()))
        runner.build_shared(["ubiqlog"])
        sessions = runner.warehouse.query(
            "SELECT package, strftime(session_start, '%H:%M:%S') AS start, strftime(session_end, '%H:%M:%S') AS end, "
            "n_spans, duration_s FROM ubiqlog.app_sessions WHERE user_id = ? ORDER BY session_start, package", [USER])
        events = runner.warehouse.query(
            "SELECT strftime(ts, '%H:%M:%S') AS time, location, intent FROM ubiqlog.events WHERE user_id = ? ORDER BY ts",
            [USER])
    assert sessions.values.tolist() == [
        ["com.whatsapp", "10:00:00", "10:03:00", 2, 180.0],
        ["com.android.browser", "10:00:30", "10:00:40", 1, 10.0],
        ["com.whatsapp", "10:04:01", "10:05:00", 1, 59.0],
        ["kr.co.manhole.hujicam", "10:08:00", "10:09:00", 1, 60.0],
        ["org.example.unlisted", "10:10:00", "10:11:00", 1, 60.0],
    ]
    assert events.values.tolist() == [
        ["10:00:00", "com.whatsapp", "communication"],  # custom genre 'chat'
        ["10:00:30", "com.android.browser", "browsing"],  # hand seed
        ["10:04:01", "com.whatsapp", "communication"],
        ["10:08:00", "kr.co.manhole.hujicam", "photography"],  # genre 'Photography'
        ["10:10:00", "org.example.unlisted", "other"],
    ]
