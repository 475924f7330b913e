"""`make ui` serves the project's asset graph over GraphQL and stops cleanly: SIGTERM to `make`
alone, or SIGINT to the whole process group (Ctrl-C), leaves no process of its session behind.
And what the UI shows, in headless Chromium, after a privacy gate stopped a generator: successful
runs, and the gate as a failed check beside a schema check that ran."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from bgen_assets.config import PROJECT_ROOT
from conftest import SUBPROCESS_TIMEOUT, headless_chromium, write_project
from servers import free_port

# A shell starts `make ui` with default signal handling. This pytest process was seen, late in a
# full run, with SIGINT, SIGQUIT and SIGTERM ignored (SigIgn 0x80004006), and make keeps inherited
# ignores, so it never acted on the test's SIGTERM. The command starts through this launcher instead.
WITH_DEFAULT_SIGNALS = [sys.executable, "-c", (
    "import os, signal, sys\n"
    "for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):\n"
    "    signal.signal(signum, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])")]
STARTUP_TIMEOUT = 90
SHUTDOWN_TIMEOUT = 60  # dagster dev stops in ~4 s when idle; its children import torch, slow on a busy machine

ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    isPartitioned
    partitionDefinition { description type dimensionTypes { name type } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } }
  }
}
"""


def session_processes(sid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose session id is `sid`."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def signal_state(pid: int) -> str:
    """The kernel's view of a process's signals (blocked, ignored, caught masks): a process that
    inherits SIGTERM blocked or ignored never acts on it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return ""
    return " ".join(line.replace("\t", "") for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def describe(procs: list[psutil.Process]) -> str:
    lines = []
    for proc in procs:
        try:
            lines.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]} [{signal_state(proc.pid)}]")
        except psutil.Error:
            lines.append(f"{proc.pid} (gone)")
    return "\n".join(lines)


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def graphql(port: int, query: str) -> dict:
    response = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_until_serving(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the UI's process exited with {server.returncode} before serving:\n{log_tail(log)}")
        try:
            if graphql(port, "{ version }").get("version"):
                return
        except (requests.RequestException, ValueError, AssertionError):
            pass
        time.sleep(0.5)
    pytest.fail(f"no GraphQL answer on port {port} within {STARTUP_TIMEOUT} s:\n{log_tail(log)}")


def check_asset_graph(port: int) -> None:
    nodes = {"/".join(node["assetKey"]["path"]): node for node in graphql(port, ASSETS_QUERY)["assetNodes"]}
    for key in ("tokyo/events", "tokyo/weekly_segments", "tokyo/synthetic_markov",
                "ubiqlog/app_sessions", "ubiqlog/synthetic_markov"):
        assert key in nodes, f"{key} missing from the asset graph: {sorted(nodes)}"

    synthetic = nodes["tokyo/synthetic_markov"]
    assert synthetic["isPartitioned"]
    definition = synthetic["partitionDefinition"]
    assert definition["type"] == "MULTIPARTITIONED"
    assert {d["name"] for d in definition["dimensionTypes"]} == {"user", "week"}
    assert "tokyo_users" in definition["description"] and "tokyo_weeks" in definition["description"]
    assert not nodes["tokyo/events"]["isPartitioned"]

    def checks(key: str) -> dict[str, bool]:
        result = nodes[key]["assetChecksOrError"]
        assert result["__typename"] == "AssetChecks", result
        return {check["name"]: check["blocking"] for check in result["checks"]}

    assert checks("tokyo/events") == {"pandera_schema": True}  # upstream table: blocking
    assert checks("ubiqlog/app_sessions").get("pandera_schema") is True
    assert checks("tokyo/synthetic_markov") == {"pandera_schema": True}  # evaluated and trained on: blocking
    assert checks("tokyo/training_set_sdv_par") == {"pandera_schema": False}  # leaf (no experiment uses it): not blocking


@pytest.mark.parametrize("stop", ["sigterm_to_make", "sigint_to_group"])
def test_make_ui_serves_and_stops_cleanly(tmp_path, fixture_data, stop):
    project_file = write_project(tmp_path, fixture_data)
    env = {k: v for k, v in os.environ.items() if k not in ("BGEN_HOME", "BGEN_DATA_DIR", "BGEN_SCOPE", "DAGSTER_HOME")}
    env["BGEN_PROJECT"] = str(project_file)
    port = free_port()
    log = tmp_path / "ui.log"
    # `-o .venv/.installed`: never (re)install the environment from a test, even when
    # pyproject.toml is newer than the stamp; the `ui` recipe itself runs unchanged.
    command = ["make", "-o", ".venv/.installed", "ui", "HOST=127.0.0.1", f"PORT={port}"]
    with log.open("wb") as out:
        make = subprocess.Popen(WITH_DEFAULT_SIGNALS + command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    sid = make.pid  # start_new_session: make leads its own session and process group
    try:
        wait_until_serving(port, make, log)
        check_asset_graph(port)
        assert (project_file.parent / "state" / "dagster" / "dagster.yaml").is_file()
        running = session_processes(sid)  # the scan below sees make and `dagster dev` under it
        assert sid in {p.pid for p in running} and any("dagster" in " ".join(p.cmdline()) for p in running), \
            describe(running)

        if stop == "sigterm_to_make":
            make.send_signal(signal.SIGTERM)
        else:
            os.killpg(sid, signal.SIGINT)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        left = session_processes(sid)
        while left and time.monotonic() < deadline:
            make.poll()  # reap make itself once it exits
            time.sleep(0.25)
            left = session_processes(sid)
        assert make.poll() is not None, (f"make still running {SHUTDOWN_TIMEOUT} s after {stop}:\n{describe(left)}\n"
                                         f"--- log ---\n{log_tail(log)}")
        assert not left, (f"still running {SHUTDOWN_TIMEOUT} s after {stop}:\n{describe(left)}\n"
                          f"--- log ---\n{log_tail(log)}")
    finally:
        leftovers = session_processes(sid)
        for proc in leftovers:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(leftovers, timeout=10)
        if make.poll() is None:
            make.kill()
        make.wait(timeout=10)


# The Dagster webserver on a socket bound to port 0 before it serves (no free-port race): prints the
# port, then serves the workspace of argv[1] on the instance under DAGSTER_HOME until SIGTERM.
SERVE_UI_ON_ANY_PORT = """
import socket, sys
import uvicorn
from dagster import DagsterInstance
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster_webserver.app import create_app_from_workspace_process_context
from dagster_webserver.version import __version__

listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
with DagsterInstance.get() as instance, WorkspaceProcessContext(
        instance, WorkspaceFileTarget([sys.argv[1]]), version=__version__) as context:
    app = create_app_from_workspace_process_context(context)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
"""


def page_text(port: int, path: str, screenshot: Path) -> str:
    """The page rendered in headless Chromium: saved as a 1400 px wide PNG, returned as its text."""
    url = f"http://127.0.0.1:{port}{path}"
    options = ("--virtual-time-budget=20000", "--window-size=1400,1000")
    headless_chromium(*options, f"--screenshot={screenshot}", url)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    dom = headless_chromium(*options, "--dump-dom", url).stdout
    dom = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.mark.slow
def test_a_stopped_generator_shows_as_successful_runs_and_a_failed_gate_check(tmp_path, fixture_data):
    project_file = write_project(tmp_path, fixture_data)
    env = {k: v for k, v in os.environ.items() if k not in ("BGEN_HOME", "BGEN_DATA_DIR", "BGEN_SCOPE")}
    env |= {"BGEN_PROJECT": str(project_file), "DAGSTER_HOME": str(tmp_path / "state" / "dagster")}
    bgen = Path(sys.executable).parent / "bgen"
    built = subprocess.run([str(bgen), "run", "--dataset", "tokyo", "--generator", "markov", "--generator",
                            "repeat_last_week", "--stage", "evaluate", "--through"], cwd=PROJECT_ROOT, env=env,
                           capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "tokyo: repeat_last_week is not trained on: privacy gate failed" in built.stdout

    log = tmp_path / "webserver.log"
    with log.open("wb") as errors:
        server = subprocess.Popen([sys.executable, "-c", SERVE_UI_ON_ANY_PORT, "workspace.yaml"], cwd=PROJECT_ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=errors, text=True, start_new_session=True)
    try:
        port = int(server.stdout.readline() or 0)
        assert port, f"the webserver printed no port:\n{log_tail(log)}"
        wait_until_serving(port, server, log)
        graphql(port, "mutation { setNuxSeen }")  # Dagster's first-visit pop-up would cover the pages
        shots = tmp_path / "screenshots"
        shots.mkdir()

        runs = page_text(port, "/runs", shots / "runs.png")
        assert runs.count("Success") >= 5 and "Failure" not in runs, f"runs page ({shots}): {runs[:2000]}"

        checks = page_text(port, "/assets/tokyo/privacy_repeat_last_week?view=checks&checkDetail=privacy_gate",
                           shots / "privacy_gate_check.png")
        assert "pandera_schema Succeeded" in checks and "privacy_gate Failed" in checks, f"({shots}): {checks[:2000]}"
        assert "privacy gate failed: 100.0% of" in checks and "non-blocking" in checks
        assert "Execution failed" not in checks
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
