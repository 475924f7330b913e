"""Raw files: locate or download them (checksummed), parse them strictly, and map their
columns to the canonical event fields declared in `bgen_project.yml`.

Every problem becomes a RawDataError naming the file, the column and the file line(s) (CSV)
or row(s) (Parquet), raised before anything is written.
"""

from __future__ import annotations

import codecs
import csv
import errno
import gzip
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import pyarrow
import pyarrow.csv as pacsv

from bgen_assets.config import Project, SourceFile

CANONICAL_EVENT_COLUMNS = ["user_id", "ts", "end_ts", "location", "intent"]
TEXT_FIELDS = ["user_id", "location", "intent"]
TIME_FIELDS = ["ts", "end_ts"]
OTHER_DELIMITERS = [";", "\t", "|", ","]
MAX_ROWS_SHOWN = 5
MAX_FIELD_CHARS = 10_000  # a location or intent is a short label; longer is a broken file, not data
EARLIEST_EVENT = pd.Timestamp("1970-01-01")  # no smartphone or check-in log predates it
LATEST_EVENT_AHEAD = pd.DateOffset(years=1)  # clocks are sometimes ahead, never by more than this
# Dagster refuses these in partition keys ("..." marks a range in the UI, the others do not display),
# and `|` joins the user and week of a multi-partition key; both pinned by tests/test_dagster_adapter.py
FORBIDDEN_IN_USER_IDS = ["...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0", "|"]
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"
DATE_ONLY = r"\d{4}-\d{2}-\d{2}"
UTC_OFFSET_SUFFIX = r"(?:Z|[+-]\d{2}:?\d{2})$"
ZERO_OFFSET_SUFFIX = r"\s*(?:Z|[+-]00:?00)$"
EPOCH_UNITS = {"epoch_s": ("s", "seconds"), "epoch_ms": ("ms", "milliseconds")}  # timestamp_format values
MAX_UTC_OFFSET_MINUTES = 14 * 60  # the widest real offsets: UTC-12 .. UTC+14
MAX_ARROW_BLOCK = 2**31 - 1
PYARROW_TEXT = pd.StringDtype("pyarrow")  # vectorised string checks on millions of rows


class RawDataError(ValueError):
    """A problem in a raw file; `lines` are file lines (CSV) or 1-based rows (Parquet), as `unit` says."""

    def __init__(self, file: Path | str, problem: str, column: str | None = None, lines=(), unit: str = "line"):
        self.file, self.column, self.lines = str(file), column, [int(line) for line in lines]
        where = [f"file {self.file}"]
        if column:
            where.append(f"column {column!r}")
        if self.lines:
            shown = ", ".join(str(line) for line in self.lines[:MAX_ROWS_SHOWN])
            more = f" and {len(self.lines) - MAX_ROWS_SHOWN} more" if len(self.lines) > MAX_ROWS_SHOWN else ""
            where.append(f"{unit}(s) {shown}{more}")
        super().__init__(f"{'; '.join(where)}: {problem}")


def refuse_rows(path: Path, bad: pd.Series, problem: str, column: str | None = None) -> None:
    """Raise a RawDataError for the rows where `bad` holds, if any. A table from `read_table` is
    indexed by file line (CSV) or row (Parquet), named by its index's name."""
    if bad.any():
        raise RawDataError(path, problem, column=column, lines=bad.index[bad], unit=bad.index.name or "line")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_present(path: Path) -> bool:
    """Whether a local file is there; a symlink loop or a dangling symlink is an error, not absence."""
    try:
        path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise RawDataError(path, f"a symlink to a missing file ({path.readlink()})") from None
        return False
    except OSError as exc:
        problem = "a symlink loop" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise RawDataError(path, problem) from None
    return True


def locate(source: SourceFile, project: Project) -> Path:
    """The local path of a source file: the data directory first, else a checked download."""
    local = project.data_directory / source.file
    if _is_present(local):
        if source.sha256 and sha256_of(local) != source.sha256:
            raise RawDataError(local, f"sha256 differs from the declared {source.sha256}")
        return local
    if not source.url:
        raise RawDataError(
            local, "file not found, and no `url` is declared to download it from "
            "(set BGEN_DATA_DIR or the source's url in bgen_project.yml)"
        )
    if not source.sha256:
        raise RawDataError(local, "a downloaded file needs a declared sha256 to verify it")
    project.download_cache.mkdir(parents=True, exist_ok=True)
    fetched = pooch.retrieve(
        source.url, known_hash=f"sha256:{source.sha256}", fname=source.file,
        path=project.download_cache, progressbar=False,
    )
    return Path(fetched)


def locate_all(source: SourceFile, project: Project) -> list[Path]:
    """The source's files: one (see `locate`), or every file its pattern matches, in name order."""
    if not source.is_pattern:
        return [locate(source, project)]
    paths = sorted(path for path in project.data_directory.glob(source.file) if _is_present(path))
    if not paths:
        raise RawDataError(project.data_directory / source.file, "no file matches this pattern")
    return paths


def load_all_events(paths: list[Path], source: SourceFile, timezone: str = "UTC") -> pd.DataFrame:
    """`load_events` of each file, as one table; a row repeating one of an earlier file is refused."""
    events = pd.concat([load_events(path, source, timezone) for path in paths], ignore_index=True)
    hashes = pd.util.hash_pandas_object(events[CANONICAL_EVENT_COLUMNS], index=False)  # equal rows, missing intents too
    repeated = hashes.duplicated(keep="first")
    if repeated.any():
        row = events[repeated].iloc[0]
        first = events[hashes == hashes[repeated].iloc[0]].iloc[0]
        unit = "row" if source.format == "parquet" else "line"
        raise RawDataError(paths[[path.name for path in paths].index(row["source_file"])],
                           f"{unit} {row['source_row']} repeats {unit} {first['source_row']} of {first['source_file']} "
                           f"({int(repeated.sum())} repeated row(s) across files)")
    return events


def _decoded_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped, checked to be UTF-8 (a byte order mark is accepted and dropped)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise RawDataError(path, f"not a readable gzip file ({exc})") from None
    if not data.strip():
        raise RawDataError(path, "the file is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RawDataError(path, f"bytes that are not UTF-8 ({exc.reason})", lines=[line]) from None
    return data.removeprefix(codecs.BOM_UTF8)


def _read_csv(path: Path, source: SourceFile) -> pd.DataFrame:
    """A CSV as text columns indexed by the file line each record starts on. Blank lines are
    skipped (so is a line of only delimiters); every record must have the header's number of fields."""
    data = _decoded_bytes(path)
    header = next(csv.reader([data.split(b"\n", 1)[0].decode().rstrip("\r")], delimiter=source.delimiter))
    repeated = next((name for i, name in enumerate(header) if name in header[:i]), None)
    if repeated is not None:
        raise RawDataError(path, "a column name repeated in the header", column=repeated, lines=[1])
    malformed = []

    def collect(row) -> str:
        malformed.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            # one block: a record longer than a block would stop the read before MAX_FIELD_CHARS names its column
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=header, use_threads=False,
                                           block_size=min(len(data) + 1, MAX_ARROW_BLOCK)),
            parse_options=pacsv.ParseOptions(delimiter=source.delimiter, ignore_empty_lines=False,
                                             invalid_row_handler=collect),
            convert_options=pacsv.ConvertOptions(column_types={column: pyarrow.string() for column in header},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pyarrow.ArrowInvalid as exc:
        raise RawDataError(path, f"malformed CSV: {exc}") from None
    if malformed:
        raise RawDataError(path, f"malformed CSV: a row of {malformed[0].actual_columns} fields where the header has "
                           f"{len(header)}", lines=[row.number for row in malformed if row.number is not None])
    frame = table.to_pandas(types_mapper={pyarrow.string(): PYARROW_TEXT}.get)
    # a quoted line break makes a record span several file lines
    line_breaks = sum(frame[column].str.count("\n") for column in header)
    earlier_breaks = (line_breaks.cumsum() - line_breaks).to_numpy(dtype=np.int64)
    frame.index = pd.Index(2 + np.arange(len(frame)) + earlier_breaks, name="line")
    refuse_rows(path, (frame == header).all(axis=1), "the header is repeated inside the file")
    frame = frame[(frame != "").any(axis=1)]  # blank lines
    if frame.empty:
        raise RawDataError(path, "the file has a header but no rows")
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file in its own column types, indexed by 1-based row."""
    try:
        frame = pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise RawDataError(path, f"not a readable Parquet file ({exc})") from None
    if frame.empty:
        raise RawDataError(path, "the file has no rows")
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return frame


def read_table(path: Path, source: SourceFile) -> pd.DataFrame:
    """A raw CSV/Parquet file as text columns, indexed by file line (CSV) or row (Parquet)."""
    if source.format == "parquet":
        return _read_parquet(path).astype(PYARROW_TEXT)
    return _read_csv(path, source)


def require_columns(path: Path, frame: pd.DataFrame, source: SourceFile, needed: list[str]) -> None:
    missing = [column for column in needed if column not in frame.columns]
    if not missing:
        return
    header = "".join(map(str, frame.columns))
    guessed = next((d for d in OTHER_DELIMITERS if d != source.delimiter and d in header), None)
    if guessed is not None:
        raise RawDataError(
            path, f"wrong delimiter: expected {source.delimiter!r}, the header looks {guessed!r}-separated",
            lines=[1],
        )
    raise RawDataError(path, f"missing column (found: {', '.join(map(str, frame.columns))})", column=missing[0], lines=[1])


def _require_parquet_types(path: Path, frame: pd.DataFrame, declared: dict[str, str], epoch: bool = False) -> None:
    """Times must be timestamps or text, labels text (user ids may be integers): a number read
    as a time or a float read as a label would change the data silently."""
    for field, column in declared.items():
        dtype = frame[column].dtype
        if field in TIME_FIELDS:
            fits = pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_string_dtype(dtype) \
                or (epoch and pd.api.types.is_integer_dtype(dtype))
            expected = "timestamps or ISO 8601 text" + (" or epoch integers" if epoch else "")
        elif field == "utc_offset":
            fits = pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
            expected = "minutes or +HH:MM text"
        else:
            fits = pd.api.types.is_string_dtype(dtype) or (field == "user_id" and pd.api.types.is_integer_dtype(dtype))
            expected = "text" + (" or integers" if field == "user_id" else "")
        if not fits:
            raise RawDataError(path, f"Parquet type {dtype} where {expected} are expected", column=column)


def _clean_text(path: Path, values: pd.Series, column: str, field: str) -> pd.Series:
    """A label column with surrounding spaces removed; empty, over-long or control-character
    values (a NUL would silently truncate a label downstream) are refused."""
    stripped = values.fillna("").str.strip()  # a Parquet null is as empty as a blank CSV field
    refuse_rows(path, stripped == "", f"empty {field}", column)
    refuse_rows(path, stripped.str.len() > MAX_FIELD_CHARS, f"a value longer than {MAX_FIELD_CHARS:,} characters",
                column)
    control = stripped.str.contains(CONTROL_CHARACTERS)
    if control.any():
        code = ord(re.search(CONTROL_CHARACTERS, stripped[control].iloc[0]).group())
        refuse_rows(path, control, f"a control character (U+{code:04X}) inside a value", column)
    return stripped


def _parse_timestamps(path: Path, values: pd.Series, column: str, fmt: str | None, timezone: str,
                      utc_offsets: pd.Series | None = None, utc_times: bool | None = None) -> pd.Series:
    """Naive timestamps are local time of the dataset's timezone already; timestamps with an
    offset, and epoch numbers, are converted to it (and made naive), so weekday and time slot are
    local. With a declared `utc_offset` column the timestamps are UTC and each row gets its own
    offset instead."""
    values = values.fillna("").str.strip()
    latest = pd.Timestamp.now().normalize() + LATEST_EVENT_AHEAD
    outside = f"a time outside {EARLIEST_EVENT:%Y-%m-%d} .. {latest:%Y-%m-%d} (a clock or format error)"
    if fmt in EPOCH_UNITS:
        parsed = _epoch_times(path, values, column, fmt, latest, outside)
    else:
        parsed = _text_times(path, values, column, fmt, timezone if utc_offsets is None else "UTC", utc_times)
    if utc_offsets is not None:
        parsed = (parsed.dt.tz_convert("UTC").dt.tz_localize(None) if parsed.dt.tz is not None else parsed) + utc_offsets
    elif parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert(timezone).dt.tz_localize(None)
    refuse_rows(path, (parsed < EARLIEST_EVENT) | (parsed > latest), outside, column)
    return parsed


def _epoch_times(path: Path, values: pd.Series, column: str, fmt: str, latest: pd.Timestamp, outside: str) -> pd.Series:
    unit, units = EPOCH_UNITS[fmt]
    numbers = pd.to_numeric(values, errors="coerce")
    refuse_rows(path, numbers.isna(), f"not a number of {units} since 1970-01-01 UTC (timestamp_format {fmt})", column)
    scale = pd.Timedelta(1, unit=unit).total_seconds()  # milliseconds read as seconds land far in the future
    refuse_rows(path, (numbers * scale < EARLIEST_EVENT.timestamp()) | (numbers * scale > latest.timestamp()),
                f"{outside}: are these {units}?", column)
    return pd.to_datetime(numbers, unit=unit, utc=True)


def _text_times(path: Path, values: pd.Series, column: str, fmt: str | None, timezone: str,
                utc_times: bool | None) -> pd.Series:
    """Times as text (ISO 8601, or `fmt`); aware where they carry an offset. A column mixing
    naive and offset times is refused (whether a naive value is local or UTC cannot be known), and
    so is one whose every time is marked UTC in a dataset that is not, unless `utc_times` says
    what they are: a local time mislabelled UTC would otherwise shift silently."""
    if fmt is None:
        refuse_rows(path, values.str.fullmatch(DATE_ONLY), "a date without a time of day (a time slot needs one)", column)
    has_offset = values.str.contains(UTC_OFFSET_SUFFIX)
    if has_offset.any():
        refuse_rows(path, ~has_offset, "a timestamp without a UTC offset among timestamps with one "
                    "(naive and offset times mixed in one column are ambiguous)", column)
        marked_utc = values.str.contains(ZERO_OFFSET_SUFFIX)
        if marked_utc.all() and timezone != "UTC" and utc_times is None:
            refuse_rows(path, marked_utc, f"every timestamp is marked UTC while the dataset's timezone is {timezone}: "
                        "declare the source's `utc_times: true` to convert them, or `false` if they are local times "
                        "mislabelled UTC", column)
        if marked_utc.all() and utc_times is False:
            values = values.str.replace(ZERO_OFFSET_SUFFIX, "", regex=True)  # read as the local times they are
            has_offset = values.str.contains(UTC_OFFSET_SUFFIX)
    try:
        parsed = pd.to_datetime(values, format=fmt or "ISO8601", errors="coerce", utc=bool(has_offset.any()))
    except ValueError as error:  # a format pandas cannot use at all
        raise RawDataError(path, f"timestamp_format {fmt!r} is not a strptime format pandas can use ({error}); "
                           "epoch numbers are declared as epoch_s or epoch_ms", column=column) from None
    unparsable = parsed.isna()
    if unparsable.any():
        first = values[unparsable].iloc[0]
        hint = " (epoch numbers are declared as timestamp_format epoch_s or epoch_ms)" if first.isdigit() else ""
        refuse_rows(path, unparsable, f"unparsable timestamp {first!r}{hint}", column)
    return parsed


def _parse_utc_offsets(path: Path, values: pd.Series, column: str) -> pd.Series:
    """Each row's offset from UTC: minutes (540) or +HH:MM (+09:00), within a day."""
    values = values.fillna("").str.strip()
    signed = values.str.extract(r"^([+-])(\d{2}):?(\d{2})$")
    minutes = pd.to_numeric(values.where(signed[0].isna()), errors="coerce")
    clock = (signed[1].astype(float) * 60 + signed[2].astype(float)) * signed[0].map({"+": 1, "-": -1})
    minutes = minutes.fillna(clock)
    refuse_rows(path, minutes.isna() | (minutes.abs() > MAX_UTC_OFFSET_MINUTES),
                f"not a UTC offset (minutes within +-{MAX_UTC_OFFSET_MINUTES}, or +HH:MM)", column)
    return pd.to_timedelta(minutes, unit="min")


def load_events(path: Path, source: SourceFile, timezone: str = "UTC") -> pd.DataFrame:
    """The canonical raw events of one file: user_id, ts, end_ts, location, intent, source_row,
    source_file, then the declared `keep` columns (times in the dataset's local `timezone`;
    source_row is the file line, or the Parquet row)."""
    mapping = source.columns
    assert mapping is not None
    declared = {field: column for field, column in mapping.model_dump(exclude={"keep"}).items() if column}
    if source.format == "parquet":
        frame = _read_parquet(path)
        require_columns(path, frame, source, [*declared.values(), *mapping.keep])
        _require_parquet_types(path, frame, declared, source.timestamp_format in EPOCH_UNITS)
        frame = frame.astype(PYARROW_TEXT)
    else:
        frame = _read_csv(path, source)
        require_columns(path, frame, source, [*declared.values(), *mapping.keep])

    events = pd.DataFrame(index=frame.index)
    for field in TEXT_FIELDS:
        if field in declared:
            events[field] = _clean_text(path, frame[declared[field]], declared[field], field)
    for forbidden in FORBIDDEN_IN_USER_IDS:
        refuse_rows(path, events["user_id"].str.contains(forbidden, regex=False),
                    f"{forbidden!r} in a user id (user ids become partition keys, which cannot hold it)",
                    declared["user_id"])
    if source.intents is not None:
        unseen = ~events["intent"].isin(source.intents)
        if unseen.any():
            refuse_rows(path, unseen, f"intent {events['intent'][unseen].iloc[0]!r} is not among the source's declared "
                        "`intents`", declared["intent"])
    offsets = _parse_utc_offsets(path, frame[declared["utc_offset"]], declared["utc_offset"]) \
        if "utc_offset" in declared else None
    for field in TIME_FIELDS:
        if field in declared:
            events[field] = _parse_timestamps(path, frame[declared[field]], declared[field], source.timestamp_format,
                                              timezone, offsets, source.utc_times)
    if "end_ts" in declared:
        refuse_rows(path, events["end_ts"] < events["ts"], "negative duration: the end is before the start",
                    declared["end_ts"])
    else:
        events["end_ts"] = events["ts"]
    if "intent" not in declared:
        events["intent"] = pd.NA
    for column in mapping.keep:  # as text; empty is missing
        events[column] = frame[column].fillna("").str.strip().replace("", None).astype("string")
    # after trimming and parsing: ` 1004` duplicating `1004` is caught here, before anything is written
    refuse_rows(path, events.duplicated(keep="first"), "duplicated rows (identical once spaces are trimmed and "
                "times parsed)")
    events["source_row"], events["source_file"] = events.index, path.name
    return events[[*CANONICAL_EVENT_COLUMNS, "source_row", "source_file", *mapping.keep]].astype(
        {"user_id": "string", "location": "string", "intent": "string"}).reset_index(drop=True)


def load_lookup(path: Path, source: SourceFile) -> pd.DataFrame:
    return read_table(path, source)
