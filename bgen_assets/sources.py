"""Raw files: locate or download them (checksummed), parse them strictly, and map their
columns to the canonical event fields declared in `bgen_project.yml`.

Every problem becomes a RawDataError naming the file, the column and the file line(s),
raised before anything is written.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import pandas as pd
import pooch

from bgen_assets.config import Project, SourceFile

CANONICAL_EVENT_COLUMNS = ["user_id", "ts", "end_ts", "location", "intent"]
OTHER_DELIMITERS = [";", "\t", "|", ","]
MAX_ROWS_SHOWN = 5


class RawDataError(ValueError):
    def __init__(self, file: Path | str, problem: str, column: str | None = None, lines=()):
        self.file, self.column, self.lines = str(file), column, list(lines)
        where = [f"file {self.file}"]
        if column:
            where.append(f"column {column!r}")
        if self.lines:
            shown = ", ".join(str(line) for line in self.lines[:MAX_ROWS_SHOWN])
            more = f" and {len(self.lines) - MAX_ROWS_SHOWN} more" if len(self.lines) > MAX_ROWS_SHOWN else ""
            where.append(f"line(s) {shown}{more}")
        super().__init__(f"{'; '.join(where)}: {problem}")


def file_line(index) -> int:
    """Line number in a CSV with a header for a 0-based data row position."""
    return int(index) + 2


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(source: SourceFile, project: Project) -> Path:
    """The local path of a source file: the data directory first, else a checked download."""
    local = project.data_directory / source.file
    if local.is_file():
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


def _decoded_text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise RawDataError(path, f"not a readable gzip file ({exc})") from None
    if not data.strip():
        raise RawDataError(path, "the file is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RawDataError(path, f"bytes that are not UTF-8 ({exc.reason})", lines=[line]) from None


def read_table(path: Path, source: SourceFile) -> pd.DataFrame:
    """Parse a raw CSV/Parquet file as strings, with errors that name the line."""
    if source.format == "parquet":
        frame = pd.read_parquet(path)
        if frame.empty:
            raise RawDataError(path, "the file has no rows")
        return frame.astype("string")
    text = _decoded_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=source.delimiter, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise RawDataError(path, f"malformed CSV: {exc}") from None
    if frame.empty:
        raise RawDataError(path, "the file has a header but no rows")
    return frame


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


def _parse_timestamps(path: Path, values: pd.Series, column: str, fmt: str | None, timezone: str) -> pd.Series:
    """Naive timestamps are local time of the dataset's timezone already; timestamps with an
    offset are converted to it (and made naive), so weekday and time slot are local."""
    parsed = pd.to_datetime(values, format=fmt or "ISO8601", errors="coerce")
    if parsed.dtype == object:  # several UTC offsets in one column
        parsed = pd.to_datetime(values, format=fmt or "ISO8601", errors="coerce", utc=True)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert(timezone).dt.tz_localize(None)
    bad = parsed.isna()
    if bad.any():
        first = values[bad].iloc[0]
        raise RawDataError(
            path, f"unparsable timestamp {first!r}", column=column, lines=[file_line(i) for i in values.index[bad]]
        )
    return parsed


def load_events(path: Path, source: SourceFile, timezone: str = "UTC") -> pd.DataFrame:
    """The canonical raw events of one file: user_id, ts, end_ts, location, intent, source_row
    (times in the dataset's local `timezone`)."""
    mapping = source.columns
    assert mapping is not None
    frame = read_table(path, source)
    declared = {field: column for field, column in mapping.model_dump().items() if column}
    require_columns(path, frame, source, list(declared.values()))

    duplicated = frame.duplicated(keep="first")
    if duplicated.any():
        raise RawDataError(path, "duplicated rows (identical in every column)",
                           lines=[file_line(i) for i in frame.index[duplicated]])
    for field in ("user_id", "location"):
        column = declared[field]
        blank = frame[column].str.strip() == ""
        if blank.any():
            raise RawDataError(path, f"empty {field}", column=column, lines=[file_line(i) for i in frame.index[blank]])

    events = pd.DataFrame({
        "user_id": frame[declared["user_id"]].str.strip(),
        "ts": _parse_timestamps(path, frame[declared["ts"]], declared["ts"], source.timestamp_format, timezone),
    })
    if "end_ts" in declared:
        events["end_ts"] = _parse_timestamps(path, frame[declared["end_ts"]], declared["end_ts"],
                                             source.timestamp_format, timezone)
        negative = events["end_ts"] < events["ts"]
        if negative.any():
            raise RawDataError(path, "negative duration: the end is before the start", column=declared["end_ts"],
                               lines=[file_line(i) for i in events.index[negative]])
    else:
        events["end_ts"] = events["ts"]
    events["location"] = frame[declared["location"]].str.strip()
    events["intent"] = frame[declared["intent"]].str.strip() if "intent" in declared else pd.NA
    events["intent"] = events["intent"].astype("string")
    events["source_row"] = [file_line(i) for i in frame.index]
    return events.astype({"user_id": "string", "location": "string"})


def load_lookup(path: Path, source: SourceFile) -> pd.DataFrame:
    return read_table(path, source)
