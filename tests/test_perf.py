"""The benchmark's own logic: scaled geometry, per-process peak memory, and the goals table.

The benchmark itself moves gigabytes and is run by hand (`python -m pipeline.perf`), not here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.perf.cases import GROWTH, draft_bytes, run_child, scaled_spec
from pipeline.perf.cli import main
from pipeline.perf.report import render, rows
from pipeline.rehearsal.synthetic import SyntheticSpec

MIB = 1024 * 1024


def test_scale_one_is_the_released_geometry_and_a_5_9_gb_draft() -> None:
    assert scaled_spec(1.0) == SyntheticSpec.real_shapes()
    assert 5.9e9 <= draft_bytes(scaled_spec(1.0)) < 5.95e9


def test_the_grown_case_differs_only_in_vocabulary() -> None:
    base, grown = scaled_spec(0.25), scaled_spec(0.25, GROWTH)
    assert grown.vocab_size == GROWTH * base.vocab_size
    assert replace(grown, vocab_size=base.vocab_size, shards=base.shards) == base


def test_peak_rss_is_the_childs_own_not_the_parents(tmp_path: Path) -> None:
    ballast = bytearray(300 * MIB)
    ballast[:: os.sysconf("SC_PAGE_SIZE")] = b"\x01" * len(ballast[:: os.sysconf("SC_PAGE_SIZE")])  # make it resident
    child = "b = bytearray(100 * 2**20); b[::4096] = b'\\x01' * len(b[::4096])"

    run = run_child([sys.executable, "-c", child], dict(os.environ), tmp_path / "child.log")

    assert 100 * MIB <= run.peak_rss < 250 * MIB
    del ballast


def _results(speedup: float, fetch_rss_grown: int) -> tuple[dict, dict]:
    rss = {"fetch": 60 * MIB, "extract": 50 * MIB, "config-fix": 50 * MIB, "verify": 50 * MIB}
    main_case = {
        "bytes": {"source": 300, "needed": 100, "ranges": 101, "whole_shards": 300, "snapshot": 300},
        "seconds": {
            "fetch_n": 10.0,
            "fetch_1": 10.0 * speedup,
            "extract": 3.0,
            "cp": 1.0,
            "sha256sum_copy": 3.0,
            "openssl_copy": None,
            "verify": 2.0,
            "sha256sum_draft": 3.0,
            "openssl_draft": None,
        },
        "peak_rss": rss,
    }
    return main_case, {"peak_rss": {**rss, "fetch": fetch_rss_grown}}


def test_the_table_marks_each_goal() -> None:
    table = {row.measure: row for row in rows(*_results(4.9, 70 * MIB), 8, 20.0)}

    assert table["bytes fetched / needed: ranges"].met is True
    assert table["bytes fetched / needed: snapshot (naive)"].met is None
    assert table["fetch time: 1 / 8 connections, 20 MB/s each"].met is False
    assert table["peak RSS: fetch"].met is False  # 60 -> 70 MiB is more than 10%
    assert table["peak RSS: verify"].met is True
    assert render(rows(*_results(6.0, 61 * MIB), 8, 20.0)).splitlines()[0].startswith("| measure")


@pytest.mark.parametrize("argv", [["--scale", "0"], ["--scale", "1.5"], ["--connections", "1"], ["--cap", "0"]])
def test_bad_settings_are_refused_before_any_work(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--workdir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert list(tmp_path.iterdir()) == []
