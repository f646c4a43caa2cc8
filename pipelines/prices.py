"""Monthly stock prices: ingest → clean → fit → report, one parallel branch per ticker.

Run it with ``python -m asyncflow pipelines.prices``. Data: ``pipelines/data/stocks.csv``,
monthly closing prices (US dollars) of five tickers, January 2000 to March 2010, columns
``symbol,date,price`` with dates like ``Jan 1 2000`` (from the vega-datasets package).

The DAG, mapped at run time over the tickers ``ingest`` finds in the CSV
(``asyncflow.each``)::

    ingest ─┬─ clean[0] ── fit[0] ─┐      AAPL
            ├─ clean[1] ── fit[1] ─┤      AMZN
            ├─ ...                 ├─ report
            └─ clean[4] ── fit[4] ─┘      MSFT

``ingest`` reads the CSV asynchronously (its cache key includes the file's SHA-256) and
returns one item per ticker, sorted by ticker; ``clean`` runs once per item and ``fit``
once per cleaned series (``fit[k]`` starts as soon as ``clean[k]`` is done), and
``report`` receives every fit, in ticker order. A CSV with a sixth ticker gets a sixth
branch with no code change. Instances are cached by their item's value: after an edit of
one ticker's rows, ``ingest`` runs again but only that ticker's ``clean`` and ``fit`` do
(and ``report``); the other tickers' items are unchanged, so their instances stay cached.
A ticker without a usable price fails its own ``clean`` instance only (its ``fit`` and the
report are skipped; the other branches finish and are checkpointed). Each ``fit`` scores
three one-step-ahead forecasters
on the last ``holdout`` months (held out from fitting):

* ``mean``: the mean of the training prices (the original demo's predictor);
* ``last_value``: the last training price (the naive random-walk forecast);
* ``drift``: the last price plus the average monthly change over the training period
  (the random walk with drift of Hyndman & Athanasopoulos, *Forecasting: Principles and
  Practice*, 3rd ed., section 5.2), extrapolated h months ahead.

and tunes a fourth, Holt's linear trend with a damped trend (*ibid.*, section 8.2), by an
exhaustive grid search of its smoothing parameters alpha and beta and its damping phi
(:data:`HOLT_GRID`, 39,600 combinations), each scored by its one-step-ahead squared errors
over the training months. The search is about 0.5 s of pure Python per ticker: the
CPU-heavy step worth spreading over cores, with the same code, by running the pipeline
with ``--executor processes`` or ``--executor dask``. It is deterministic (no random
numbers), so the report does not depend on where the fits ran.

Errors are MAE and RMSE in dollars and MAPE in percent. ``report`` writes
``<workdir>/prices_report.md``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncflow

DATA = Path(__file__).resolve().parent / "data" / "stocks.csv"

pipeline = asyncflow.Pipeline(
    "prices",
    params={"csv": str(DATA), "holdout": 12},
    description="Monthly closing prices of five tickers: clean, fit three forecasters, report.",
)


@pipeline.task(cache_key_fn=lambda params: asyncflow.file_digest(params["csv"]), retries=2, retry_delay=0.2)
async def ingest(params: Mapping[str, Any], context: asyncflow.RunContext) -> list[dict[str, Any]]:
    """Read the CSV; return one item per ticker, sorted by ticker:
    ``[{"ticker": str, "rows": [[date text, price text], ...]}, ...]``, rows in file order.

    Raises:
        ValueError: the CSV lacks a ``symbol``, ``date`` or ``price`` column.
        OSError: the CSV cannot be read.

    Any exception is retried (``retries=2``: at most 3 attempts, 0.2 s then 0.4 s apart);
    a missing file fails at once, in ``cache_key_fn``, before any attempt.
    """
    text = await asyncflow.read_text(params["csv"])
    reader = csv.DictReader(io.StringIO(text))
    missing = {"symbol", "date", "price"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{params['csv']}: missing column(s) {', '.join(sorted(missing))}")
    rows: dict[str, list[list[str]]] = {}
    for row in reader:
        rows.setdefault((row["symbol"] or "").strip(), []).append([row["date"], row["price"]])
    context.logger.info(
        "read {} rows of {} tickers from {}", sum(map(len, rows.values())), len(rows), params["csv"]
    )
    return [{"ticker": ticker, "rows": rows[ticker]} for ticker in sorted(rows)]


def _parse_row(date_text: str, price_text: str) -> tuple[str, float] | None:
    """``(ISO date, price in USD)`` of one CSV row, or ``None`` when its date does not
    parse (``"Jan 1 2000"``) or its price is missing, not a number, not finite or not
    positive."""
    try:
        date = datetime.strptime(date_text.strip(), "%b %d %Y").date().isoformat()
        price = float(price_text)
    except (ValueError, AttributeError):
        return None
    return (date, price) if math.isfinite(price) and price > 0 else None


def clean_rows(rows: list[list[str]]) -> list[list[Any]]:
    """Parse ``[[date text like "Jan 1 2000", price text], ...]``, drop missing or
    non-numeric prices and duplicate dates (the last one wins), sort by date; return
    ``[[ISO date, price in USD], ...]``."""
    by_date = dict(parsed for row in rows if (parsed := _parse_row(*row)) is not None)
    return [[date, by_date[date]] for date in sorted(by_date)]


@pipeline.task(inputs={"raw": asyncflow.each("ingest")})
def clean(raw: dict[str, Any], context: asyncflow.RunContext | None = None) -> dict[str, Any]:
    """One ticker's item from ``ingest``, cleaned (see :func:`clean_rows`):
    ``{"ticker": str, "series": [[ISO date, price in USD], ...]}``.

    Rows without a usable date and price are dropped with a warning naming how many and
    the first of them (through ``context.logger``, when the pipeline runs it), so that a
    corrupted CSV never silently gives a report on fewer months.

    Raises:
        ValueError: the ticker has no usable price (this instance fails, no other).
    """
    rows = raw["rows"]
    bad = [row for row in rows if _parse_row(*row) is None]
    if bad and context is not None:
        context.logger.warning(
            "{}: dropped {} of {} rows without a usable date and price (the first: {})",
            raw["ticker"],
            len(bad),
            len(rows),
            ",".join(bad[0]),
        )
    series = clean_rows(rows)
    if not series:
        raise ValueError(f"ticker {raw['ticker']!r} has no usable price in the CSV ({len(rows)} rows)")
    return {"ticker": raw["ticker"], "series": series}


def _errors(actual: list[float], predicted: list[float]) -> dict[str, float]:
    diffs = [p - a for a, p in zip(actual, predicted, strict=True)]
    return {
        "mae": statistics.fmean(abs(d) for d in diffs),
        "rmse": math.sqrt(statistics.fmean(d * d for d in diffs)),
        "mape": 100 * statistics.fmean(abs(d) / a for d, a in zip(diffs, actual, strict=True)),
    }


HOLT_GRID = (
    tuple(i / 60 for i in range(1, 61)),
    tuple(i / 60 for i in range(1, 61)),
    (0.8, 0.82, 0.84, 0.86, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 1.0),
)
"""The values of alpha, beta and phi that :func:`tune_holt` tries (all combinations)."""


def _holt_sse(train: list[float], alpha: float, beta: float, phi: float) -> tuple[float, float, float]:
    """One pass of damped Holt over ``train`` (error-correction form, level and trend
    started from the first two months): the sum of squared one-step errors, and the
    final level and trend."""
    level, trend = train[0], train[1] - train[0]
    sse = 0.0
    for price in train[1:]:
        damped = phi * trend
        error = price - level - damped
        sse += error * error
        level += damped + alpha * error
        trend = damped + alpha * beta * error
    return sse, level, trend


def tune_holt(train: list[float], horizon: int) -> dict[str, Any]:
    """Grid-search damped Holt on ``train`` (at least 2 prices) and forecast ``horizon``
    months: ``{"alpha", "beta", "phi", "combinations", "forecast": [USD, ...]}``.

    The chosen parameters minimise the in-sample one-step squared error; ties keep the
    first combination in :data:`HOLT_GRID` order.
    """
    best: tuple[float, float, float, float, float, float] | None = None
    alphas, betas, phis = HOLT_GRID
    for alpha in alphas:
        for beta in betas:
            for phi in phis:
                sse, level, trend = _holt_sse(train, alpha, beta, phi)
                if best is None or sse < best[0]:
                    best = (sse, alpha, beta, phi, level, trend)
    assert best is not None
    _, alpha, beta, phi, level, trend = best
    forecast, damping = [], 0.0
    for h in range(1, horizon + 1):
        damping += phi**h
        forecast.append(level + damping * trend)
    return {
        "alpha": alpha,
        "beta": beta,
        "phi": phi,
        "combinations": len(alphas) * len(betas) * len(phis),
        "forecast": forecast,
    }


def fit_series(series: list[list[Any]], holdout: int, ticker: str = "") -> dict[str, Any]:
    """Fit and score the three forecasters, and tune damped Holt, on one ticker's series
    (``[[ISO date, price in USD], ...]``, by date).

    Returns statistics of the whole series (first/last date and price, total return in
    percent, annualised volatility of monthly log returns in percent), per model its
    errors on the last ``holdout`` months, and under ``"holt"`` the tuned parameters of
    damped Holt and its errors on the same months (see :func:`tune_holt`).

    Raises:
        ValueError: ``holdout`` is below 1, or the series has fewer than ``holdout + 2``
            months.
    """
    if holdout < 1:
        raise ValueError(f"holdout must be at least 1 month, not {holdout}")
    if len(series) < holdout + 2:
        raise ValueError(f"{ticker}: {len(series)} months of data, need at least holdout + 2 = {holdout + 2}")
    prices = [price for _, price in series]
    train, test = prices[:-holdout], prices[-holdout:]
    steps = range(1, holdout + 1)
    slope = (train[-1] - train[0]) / (len(train) - 1)
    forecasts = {
        "mean": [statistics.fmean(train)] * holdout,
        "last_value": [train[-1]] * holdout,
        "drift": [train[-1] + h * slope for h in steps],
    }
    models = {name: _errors(test, predicted) for name, predicted in forecasts.items()}
    holt = tune_holt(train, holdout)
    holt["errors"] = _errors(test, holt.pop("forecast"))
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    return {
        "ticker": ticker,
        "months": len(prices),
        "first": series[0],
        "last": series[-1],
        "total_return_pct": 100 * (prices[-1] / prices[0] - 1),
        "volatility_pct": 100 * statistics.stdev(returns) * math.sqrt(12),
        "holdout": holdout,
        "models": models,
        "best": min(models, key=lambda name: models[name]["mae"]),
        "holt": holt,
    }


@pipeline.task(inputs={"cleaned": asyncflow.each("clean")})
def fit(cleaned: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """One ticker's cleaned series, fitted with the run's ``holdout`` (months, default 12):
    see :func:`fit_series`, whose exceptions it raises."""
    return fit_series(cleaned["series"], int(params["holdout"]), cleaned["ticker"])


def _render(fits: list[dict[str, Any]], csv_path: str) -> str:
    holdout = fits[0]["holdout"]
    lines = [
        "# Monthly closing prices: statistics and forecast errors",
        "",
        f"Data: `{csv_path}`. Forecasts are scored on the last {holdout} months, held out from fitting.",
        "",
        "| ticker | months | from | to | first $ | last $ | total return % | volatility % (annual) |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for f in fits:
        lines.append(
            f"| {f['ticker']} | {f['months']} | {f['first'][0]} | {f['last'][0]} | {f['first'][1]:.2f} "
            f"| {f['last'][1]:.2f} | {f['total_return_pct']:.1f} | {f['volatility_pct']:.1f} |"
        )
    lines += [
        "",
        f"## Forecast errors over the last {holdout} months",
        "",
        "| ticker | model | MAE $ | RMSE $ | MAPE % |",
        "|---|---|---:|---:|---:|",
    ]
    for f in fits:
        for name, err in f["models"].items():
            mark = " **(best)**" if name == f["best"] else ""
            lines.append(
                f"| {f['ticker']} | {name}{mark} | {err['mae']:.2f} | {err['rmse']:.2f} | {err['mape']:.1f} |"
            )
    wins: dict[str, int] = {}
    for f in fits:
        wins[f["best"]] = wins.get(f["best"], 0) + 1
    summary = ", ".join(f"{name} on {n} ticker{'s' if n > 1 else ''}" for name, n in sorted(wins.items()))
    lines += ["", f"Lowest MAE: {summary}.", ""]
    combinations = fits[0]["holt"]["combinations"]
    lines += [
        "## Damped Holt, tuned by grid search",
        "",
        f"Smoothing alpha and beta and damping phi chosen among {combinations:,} combinations by "
        "the one-step squared error over the training months; errors over the same held-out months.",
        "",
        "| ticker | alpha | beta | phi | MAE $ | RMSE $ | MAPE % | MAE vs best of the three $ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in fits:
        h, err = f["holt"], f["holt"]["errors"]
        gain = err["mae"] - f["models"][f["best"]]["mae"]
        lines.append(
            f"| {f['ticker']} | {h['alpha']:.3f} | {h['beta']:.3f} | {h['phi']:.2f} | {err['mae']:.2f} "
            f"| {err['rmse']:.2f} | {err['mape']:.1f} | {gain:+.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


@pipeline.task(inputs={"fits": "fit"}, outputs=["{workdir}/prices_report.md"])
async def report(fits: list[dict[str, Any]], params: Mapping[str, Any], context: asyncflow.RunContext) -> str:
    """Write ``<workdir>/prices_report.md`` from every ticker's fit (the list of ``fit``'s
    instances' results, in ticker order); return its path."""
    path = context.workdir / "prices_report.md"
    await asyncflow.write_text(path, _render(fits, params["csv"]))
    return str(path)
