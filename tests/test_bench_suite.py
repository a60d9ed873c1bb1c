"""The benchmark suite's pure parts: ratios, spreads, targets, table, JSON, intervals.

No timing here: the figures are built from fixed samples.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.suite_intervals import PARTS, merge, orchestration_parts, worker_gaps
from benchmarks.suite_plot import overhead_series
from benchmarks.suite_report import (
    SPREAD,
    Figure,
    count_figure,
    markdown,
    ratio_figure,
    share_figure,
    status,
    table,
    to_json,
)


def test_ratio_is_of_pooled_medians_and_spread_is_per_repeat() -> None:
    ours = [[2.0, 2.0, 2.0], [3.0, 3.0, 3.0]]
    base = [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    f = ratio_figure("k", "t", ours, base, base_label="raw", scale=1.0, unit="s", target=1.5)
    # Pooled medians: ours 2.5 (of 2,2,2,3,3,3), base 1.5 -> 1.667; per repeat: 2.0 and 1.5.
    assert f.ours == pytest.approx(2.5)
    assert f.base == pytest.approx(1.5)
    assert f.value == pytest.approx(2.5 / 1.5)
    assert f.spread is not None
    assert f.spread[0] == pytest.approx(1.5)
    assert f.spread[1] == pytest.approx(2.0)
    assert (f.repeats, f.samples) == (2, 6)
    assert f.met is False
    assert status(f) == "MISSED"


def test_ratio_needs_matching_repeats() -> None:
    with pytest.raises(ValueError, match="same number"):
        ratio_figure("k", "t", [[1.0]], [[1.0], [1.0]], base_label="raw")
    with pytest.raises(ValueError, match="no samples"):
        ratio_figure("k", "t", [[]], [[1.0]], base_label="raw")


def test_targets_counts_and_shares() -> None:
    c = count_figure("c", "copies", 1.0, target=1.0)
    assert status(c) == "met"
    s = share_figure("s", "share", {"a": 0.05, "b": 0.02}, wall_s=0.1, repeats=5, target=0.1)
    assert s.value == pytest.approx(0.07)
    assert status(s) == "met"
    assert status(count_figure("n", "no target", 3.0)) == "-"


def test_table_markdown_and_json_carry_every_figure() -> None:
    figures = [
        ratio_figure("r", "a | b", [[2e-3]], [[1e-3]], base_label="raw", target=1.05),
        count_figure("c", "copies", 2.0, target=1.0, note="counted"),
        share_figure("s", "share", {"x": 0.2}, wall_s=0.1, repeats=3),
    ]
    text = table(figures)
    assert "2.00x [2.00-2.00]" in text
    assert "MISSED" in text
    assert SPREAD in text
    md = markdown(figures).splitlines()
    assert len(md) == 2 + len(figures)
    assert "a \\| b" in md[2]
    data = json.loads(json.dumps(to_json(figures, {"machine": "m"})))
    assert data["spread"] == SPREAD
    assert set(data["figures"]) == {"r", "c", "s"}
    r = data["figures"]["r"]
    assert (r["ours"], r["base"], r["repeats"], r["status"]) == (2.0, 1.0, 1, "MISSED")
    assert r["spread"] == [2.0, 2.0]
    assert data["figures"]["s"]["parts"] == {"x": 0.2}


def test_merge() -> None:
    assert merge([(3, 4), (1, 2), (1.5, 2.5), (5, 5)]) == [(1, 2.5), (3, 4)]


def test_orchestration_parts_split_the_idle_time() -> None:
    # Window 0..10. Worker a busy 1..6, worker b busy 1..4: all busy 1..4 (3 s), only a 4..6
    # (2 s: waiting on the slowest). Nobody busy 0..1 (driver submits 0..1), 6..10 (driver
    # waits 6..8 = collect, 8..10 = driver work).
    parts = orchestration_parts(
        (0.0, 10.0),
        {"a": [(1.0, 6.0)], "b": [(1.0, 2.0), (2.0, 4.0)]},
        submit=[(0.0, 1.0)],
        wait=[(3.0, 8.0)],
    )
    assert list(parts) == list(PARTS)
    assert parts == {
        "waiting on slowest": pytest.approx(0.2),
        "submit": pytest.approx(0.1),
        "collect": pytest.approx(0.2),
        "driver work": pytest.approx(0.2),
    }
    assert sum(parts.values()) == pytest.approx(0.7)


def test_orchestration_parts_refuse_empty_input() -> None:
    with pytest.raises(ValueError, match="empty window"):
        orchestration_parts((1.0, 1.0), {"a": []}, [], [])
    with pytest.raises(ValueError, match="no workers"):
        orchestration_parts((0.0, 1.0), {}, [], [])


def test_overhead_series_groups_by_backend_and_mode() -> None:
    def fig(key: str) -> Figure:
        return ratio_figure(key, key, [[1.0]], [[1.0]], base_label="raw")

    figures = [fig("ray_blocking_4"), fig("ray_blocking_1"), fig("monarch_pipelined_2")]
    series = overhead_series(figures)
    assert [r for r, _ in series["Ray blocking"]] == [1, 4]
    assert [r for r, _ in series["Monarch pipelined"]] == [2]
    assert "Ray pipelined" not in series


def test_worker_gaps_split_time_outside_methods_into_wrapper_and_between_calls() -> None:
    window = (0.0, 10.0)
    calls = {"a": [(1.0, 5.0), (6.0, 9.0)], "b": [(0.0, 10.0)]}
    busy = {"a": [(2.0, 4.0), (6.5, 8.5)], "b": [(0.0, 9.0)]}
    gaps = worker_gaps(busy, calls, window)
    # a: wrapper 7 - 4 = 3, between 10 - 7 = 3; b: wrapper 1, between 0 -> means 2 and 1.5.
    assert gaps["engine task wrapper"] == pytest.approx(0.2)
    assert gaps["between calls"] == pytest.approx(0.15)
