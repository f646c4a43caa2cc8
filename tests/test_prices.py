"""The flagship pipeline's own logic, on small hand-made series and on the shipped CSV."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest

import asyncflow
from pipelines import prices


def test_clean_parses_sorts_and_drops_bad_rows() -> None:
    rows = {
        "XYZ": [
            ["Mar 1 2001", "12.5"],
            ["Jan 1 2001", "10"],
            ["Feb 1 2001", ""],  # missing price
            ["Feb 1 2001", "n/a"],  # not a number
            ["not a date", "11"],
            ["Apr 1 2001", "nan"],  # not finite
            ["Jan 1 2001", "10.5"],  # a duplicate date: the later row wins
        ]
    }
    assert prices.clean(rows, ticker="XYZ") == [["2001-01-01", 10.5], ["2001-03-01", 12.5]]


def test_clean_names_a_missing_ticker() -> None:
    with pytest.raises(KeyError, match="ticker 'ABC' is not in the CSV"):
        prices.clean({"XYZ": []}, ticker="ABC")


def series(values: list[float]) -> list[list[Any]]:
    return [[f"2000-{i + 1:02d}-01", v] for i, v in enumerate(values)]


def test_fit_scores_the_drift_model_exactly_on_a_straight_line() -> None:
    line = [100.0 + 2.0 * i for i in range(12)]
    fit = prices.fit(series(line), {"holdout": 4}, ticker="LIN")
    assert fit["months"] == 12
    assert fit["models"]["drift"] == {"mae": 0.0, "rmse": 0.0, "mape": 0.0}
    # last value = 114 against 116, 118, 120, 122
    assert fit["models"]["last_value"]["mae"] == pytest.approx((2 + 4 + 6 + 8) / 4)
    # mean of the 8 training months = 107
    assert fit["models"]["mean"]["mae"] == pytest.approx((9 + 11 + 13 + 15) / 4)
    assert fit["best"] == "drift"
    assert fit["total_return_pct"] == pytest.approx(100 * (122 / 100 - 1))


def test_fit_volatility_is_the_annualised_stdev_of_log_returns() -> None:
    values = [100.0, 110.0, 99.0, 108.9, 98.01, 107.811]
    fit = prices.fit(series(values), {"holdout": 2}, ticker="VOL")
    returns = [math.log(b / a) for a, b in itertools.pairwise(values)]
    mean = sum(returns) / len(returns)
    stdev = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    assert fit["volatility_pct"] == pytest.approx(100 * stdev * math.sqrt(12))


def test_fit_needs_more_months_than_the_holdout() -> None:
    with pytest.raises(ValueError, match="need at least holdout \\+ 2 = 6"):
        prices.fit(series([1.0, 2.0, 3.0]), {"holdout": 4}, ticker="SHORT")


def test_pipeline_has_one_branch_per_ticker_joined_by_report() -> None:
    graph = prices.pipeline.validate()
    report = graph.node("report")
    assert sorted(graph.nodes[u].name for u in report.upstream) == [f"fit_{t}" for t in prices.TICKERS]
    for ticker in prices.TICKERS:
        assert [graph.nodes[u].name for u in graph.node(f"fit_{ticker}").upstream] == [f"clean_{ticker}"]
        assert [graph.nodes[u].name for u in graph.node(f"clean_{ticker}").upstream] == ["ingest"]


async def test_run_on_the_shipped_data_writes_the_report(tmp_path: Path) -> None:
    result = await prices.pipeline.run(workdir=tmp_path, store=asyncflow.MemoryStore())
    assert result.ok, result.errors
    report = await asyncflow.read_text(result.tasks["report"].result)
    assert report.startswith("# Monthly closing prices")
    # GOOG listed in August 2004: 68 monthly closes up to March 2010
    assert "| GOOG | 68 | 2004-08-01 | 2010-03-01 |" in report
    fit = result.tasks["fit_AAPL"].result
    assert fit["months"] == 123 and fit["holdout"] == 12
    assert set(fit["models"]) == {"mean", "last_value", "drift"}
