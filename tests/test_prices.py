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
    rows = [
        ["Mar 1 2001", "12.5"],
        ["Jan 1 2001", "10"],
        ["Feb 1 2001", ""],  # missing price
        ["Feb 1 2001", "n/a"],  # not a number
        ["not a date", "11"],
        ["Apr 1 2001", "nan"],  # not finite
        ["Jan 1 2001", "10.5"],  # a duplicate date: the later row wins
    ]
    assert prices.clean_rows(rows) == [["2001-01-01", 10.5], ["2001-03-01", 12.5]]
    assert prices.clean({"ticker": "XYZ", "rows": rows}) == {
        "ticker": "XYZ",
        "series": [["2001-01-01", 10.5], ["2001-03-01", 12.5]],
    }


def test_clean_names_a_ticker_without_a_usable_price() -> None:
    with pytest.raises(ValueError, match="ticker 'ABC' has no usable price in the CSV \\(1 rows\\)"):
        prices.clean({"ticker": "ABC", "rows": [["Jan 1 2001", "n/a"]]})


def series(values: list[float]) -> list[list[Any]]:
    return [[f"2000-{i + 1:02d}-01", v] for i, v in enumerate(values)]


def test_fit_scores_the_drift_model_exactly_on_a_straight_line() -> None:
    line = [100.0 + 2.0 * i for i in range(12)]
    fit = prices.fit({"ticker": "LIN", "series": series(line)}, {"holdout": 4})
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
    fit = prices.fit_series(series(values), 2, ticker="VOL")
    returns = [math.log(b / a) for a, b in itertools.pairwise(values)]
    mean = sum(returns) / len(returns)
    stdev = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    assert fit["volatility_pct"] == pytest.approx(100 * stdev * math.sqrt(12))


def test_fit_needs_more_months_than_the_holdout() -> None:
    with pytest.raises(ValueError, match="need at least holdout \\+ 2 = 6"):
        prices.fit_series(series([1.0, 2.0, 3.0]), 4, ticker="SHORT")


def test_clean_and_fit_are_mapped_over_the_tickers_and_report_takes_the_list() -> None:
    graph = prices.pipeline.validate()
    names = {i: node.name for i, node in enumerate(graph.nodes)}
    assert [(p, names[u]) for p, u in graph.node("clean").maps] == [("raw", "ingest")]
    assert [(p, names[u]) for p, u in graph.node("fit").maps] == [("cleaned", "clean")]
    assert [(p, names[u]) for p, u in graph.node("report").inputs] == [("fits", "fit")]
    assert [names[d] for d in graph.node("clean").chained] == ["fit"]


async def test_run_on_the_shipped_data_writes_the_report(tmp_path: Path) -> None:
    result = await prices.pipeline.run(workdir=tmp_path, store=asyncflow.MemoryStore())
    assert result.ok, result.errors
    report = await asyncflow.read_text(result.tasks["report"].result)
    assert report.startswith("# Monthly closing prices")
    # GOOG listed in August 2004: 68 monthly closes up to March 2010
    assert "| GOOG | 68 | 2004-08-01 | 2010-03-01 |" in report
    assert [f["ticker"] for f in result.tasks["fit"].result] == ["AAPL", "AMZN", "GOOG", "IBM", "MSFT"]
    fit = result.tasks["fit[0]"].result
    assert fit["ticker"] == "AAPL" and fit["months"] == 123 and fit["holdout"] == 12
    assert set(fit["models"]) == {"mean", "last_value", "drift"}


def _edited(tmp_path: Path, edit: Any) -> Path:
    """A copy of the shipped CSV with ``edit(lines) -> lines`` applied."""
    copy = tmp_path / "stocks.csv"
    lines = prices.DATA.read_text().splitlines()
    copy.write_text("\n".join(edit(lines)) + "\n")
    return copy


async def test_editing_one_ticker_reruns_only_its_clean_and_fit(tmp_path: Path) -> None:
    """Issue #9's flagship criterion: one MSFT row edited, the four other branches cached."""
    csv = _edited(tmp_path, lambda lines: lines)
    store = asyncflow.MemoryStore()
    first = await prices.pipeline.run(workdir=tmp_path, store=store, params={"csv": str(csv)}, log=False)
    assert first.ok
    _edited(tmp_path, lambda lines: [lines[0], lines[1].replace("39.81", "40.81"), *lines[2:]])
    second = await prices.pipeline.run(workdir=tmp_path, store=store, params={"csv": str(csv)}, log=False)
    ran = {name for name, t in second.tasks.items() if t.state is asyncflow.TaskState.SUCCEEDED}
    cached = {name for name, t in second.tasks.items() if t.state is asyncflow.TaskState.CACHED}
    assert ran == {"ingest", "clean", "clean[4]", "fit", "fit[4]", "report"}
    assert cached == {f"{task}[{k}]" for task in ("clean", "fit") for k in range(4)}
    assert second.tasks["clean[4]"].result["ticker"] == "MSFT"
    assert second.tasks["fit[4]"].result["first"] == ["2000-01-01", 40.81]


async def test_a_sixth_ticker_gets_a_sixth_branch(tmp_path: Path) -> None:
    def add_ticker(lines: list[str]) -> list[str]:
        extra = [line.replace("IBM,", "ZZZ,") for line in lines if line.startswith("IBM,")]
        return lines + extra

    csv = _edited(tmp_path, add_ticker)
    result = await prices.pipeline.run(
        workdir=tmp_path, params={"csv": str(csv)}, checkpoints=False, log=False
    )
    assert result.ok, result.errors
    assert len(result.instances("clean")) == len(result.instances("fit")) == 6
    assert result.tasks["fit[5]"].result["ticker"] == "ZZZ"
    report = (tmp_path / "prices_report.md").read_text()
    assert "| ZZZ | 123 |" in report


async def test_a_ticker_without_prices_fails_only_its_own_branch(tmp_path: Path) -> None:
    def spoil_ibm(lines: list[str]) -> list[str]:
        return [line.rsplit(",", 1)[0] + ",n/a" if line.startswith("IBM,") else line for line in lines]

    csv = _edited(tmp_path, spoil_ibm)
    store = asyncflow.MemoryStore()
    result = await prices.pipeline.run(workdir=tmp_path, store=store, params={"csv": str(csv)}, log=False)
    states = {name: t.state.value for name, t in result.tasks.items()}
    assert states["clean[3]"] == "failed" and states["fit[3]"] == "skipped"
    assert states["report"] == "skipped"
    assert all(states[f"fit[{k}]"] == "succeeded" for k in (0, 1, 2, 4))
    assert "ticker 'IBM' has no usable price" in str(result.tasks["clean[3]"].error)
    # After the fix, only IBM's branch (and the report) runs again.
    _edited(tmp_path, lambda lines: lines)
    fixed = await prices.pipeline.run(workdir=tmp_path, store=store, params={"csv": str(csv)}, log=False)
    ran = {name for name, t in fixed.tasks.items() if t.state is asyncflow.TaskState.SUCCEEDED}
    assert ran == {"ingest", "clean", "clean[3]", "fit", "fit[3]", "report"}


async def test_rows_without_a_usable_price_are_dropped_with_a_warning(tmp_path: Path) -> None:
    """A corrupted price never silently shortens the report: its ticker's clean warns."""
    from loguru import logger

    csv = _edited(
        tmp_path,
        lambda lines: [line.replace("MSFT,Apr 1 2008,27.34", "MSFT,Apr 1 2008,N/A") for line in lines],
    )
    seen: list[str] = []
    logger.enable("asyncflow")
    sink = logger.add(lambda message: seen.append(message.record["message"]), level="WARNING")
    try:
        result = await prices.pipeline.run(workdir=tmp_path, params={"csv": str(csv)}, checkpoints=False)
    finally:
        logger.remove(sink)
        logger.disable("asyncflow")
    assert result.ok, result.errors
    assert result.tasks["fit[4]"].result["months"] == 122
    assert seen == ["MSFT: dropped 1 of 123 rows without a usable date and price (the first: Apr 1 2008,N/A)"]
