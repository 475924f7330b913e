"""`make bench`: a plain run measures every benchmark except the hour-long ones, which run only
when named (`ONLY=full_run`, `ONLY=utility`)."""

import pytest

from bgen_assets import bench


@pytest.mark.parametrize(("argv", "expected"), [
    ([], [name for name in bench.BENCHMARKS if name not in ("full_run", "utility")]),
    (["--only", "full_run"], ["full_run"]),
    (["--only", "utility"], ["utility"]),
])
def test_which_benchmarks_a_command_runs(monkeypatch, argv, expected):
    ran = []
    monkeypatch.setattr(bench, "BENCHMARKS", {name: (lambda runner, name=name: ran.append(name) or {})
                                              for name in bench.BENCHMARKS})
    monkeypatch.setattr(bench, "record", lambda name, figures: None)
    monkeypatch.setattr(bench, "_runner", lambda: None)
    bench.main(argv)
    assert ran == expected
