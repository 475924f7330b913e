"""A source file absent from the data directory is downloaded from its declared URL (a real
HTTP server on loopback) into the cache and verified by sha256."""

import functools
import http.server
import threading

import pytest

from bgen_assets.config import load_project
from bgen_assets.sources import locate, sha256_of
from conftest import write_project

FILE = "tokyo_checkins.csv.gz"


@pytest.fixture
def server(fixture_data):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(fixture_data))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def project_downloading(tmp_path, url, sha256):
    def declare(raw):
        raw["datasets"]["tokyo"]["sources"]["events"].update(url=f"{url}/{FILE}", sha256=sha256)

    empty = tmp_path / "empty-data-dir"
    empty.mkdir()
    return load_project(write_project(tmp_path, empty, declare))


def test_absent_file_is_downloaded_and_verified(tmp_path, fixture_data, server):
    expected = sha256_of(fixture_data / FILE)
    project = project_downloading(tmp_path, server, expected)
    path = locate(project.datasets["tokyo"].sources["events"], project)
    assert path.parent == project.download_cache and sha256_of(path) == expected


def test_checksum_mismatch_is_refused(tmp_path, server):
    project = project_downloading(tmp_path, server, "0" * 64)
    with pytest.raises(ValueError, match="hash"):
        locate(project.datasets["tokyo"].sources["events"], project)
    assert not (project.download_cache / FILE).exists()


def test_absent_file_without_url_names_the_file(tmp_path):
    project = project_downloading(tmp_path, "unused", None)
    source = project.datasets["tokyo"].sources["events"].model_copy(update={"url": None})
    with pytest.raises(ValueError, match=f"{FILE}.*not found"):
        locate(source, project)
