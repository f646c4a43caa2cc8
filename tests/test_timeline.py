"""The timeline page: critical path, the marks it draws, and a real headless Chromium loading it."""

from __future__ import annotations

import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mixed_pipeline import ATTEMPTS
from mixed_pipeline import pipeline as mixed

import asyncflow
from asyncflow._recorder import RunRecorder
from asyncflow._records import RunRecord
from asyncflow._store import MemoryStore
from asyncflow._timeline import critical_path, render_timeline

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SVG = "{http://www.w3.org/2000/svg}"


def _record_of(durations: dict[str, float], upstream: dict[str, tuple[str, ...]]) -> RunRecord:
    """A finished run in which each task ran once for ``durations[task]`` seconds."""
    rec = RunRecorder()
    e: dict[str, Any] = {"run_id": "r"}
    rec(asyncflow.RunStarted(**e, time=0.0, pipeline="p", tasks=len(durations), upstream=upstream))
    t = 0.0
    for name, seconds in durations.items():
        rec(asyncflow.TaskStarted(**e, time=t, task=name, attempt=1))
        rec(asyncflow.TaskSucceeded(**e, time=t + seconds, task=name, attempt=1, duration=seconds))
        t += seconds
    rec(asyncflow.RunFinished(**e, time=t, pipeline="p", ok=True, duration=t, counts={}))
    return rec.record()


def test_critical_path_is_the_longest_chain_by_duration() -> None:
    #   a(1) ─┬─ b(5) ─┬─ d(1)
    #         └─ c(2) ─┘      e(7), alone
    upstream = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ()}
    record = _record_of({"a": 1, "b": 5, "c": 2, "d": 1, "e": 6.5}, upstream)
    assert critical_path(record) == ["a", "b", "d"]
    record = _record_of({"a": 1, "b": 5, "c": 2, "d": 1, "e": 7.5}, upstream)
    assert critical_path(record) == ["e"]


def test_critical_path_is_empty_when_nothing_took_time() -> None:
    assert critical_path(_record_of({"a": 0.0}, {"a": ()})) == []


def test_critical_path_follows_dependencies_not_definition_order() -> None:
    # "late" is defined first but runs after "early".
    record = _record_of({"late": 1, "early": 2}, {"late": ("early",), "early": ()})
    assert critical_path(record) == ["early", "late"]


@pytest.fixture(scope="module")
def mixed_record() -> RunRecord:
    """The record of the mixed pipeline's second run: cached, retried, failed, skipped."""
    store = MemoryStore()
    mixed.run_sync(store=store, log=False, checkpoints=True, workdir=tempfile.mkdtemp())
    recorder = RunRecorder()
    mixed.run_sync(store=store, log=False, listeners=[recorder], workdir=tempfile.mkdtemp())
    return recorder.record()


def _svg(page: str) -> ET.Element:
    start = page.index('<svg xmlns="http://www.w3.org/2000/svg" id="timeline"')
    end = page.index("</svg>", start) + len("</svg>")
    return ET.fromstring(page[start:end])  # the chart is well-formed XML


def test_page_draws_one_bar_per_attempt_with_data_attributes(mixed_record: RunRecord) -> None:
    svg = _svg(render_timeline(mixed_record))
    bars = [r for r in svg.iter(f"{SVG}rect") if "attempt" in r.get("class", "").split()]
    assert Counter(r.get("data-task") for r in bars) == {k: v for k, v in ATTEMPTS.items() if v}
    flaky = [(r.get("data-attempt"), r.get("data-state")) for r in bars if r.get("data-task") == "flaky"]
    assert flaky == [("1", "retrying"), ("2", "retrying"), ("3", "succeeded")]
    assert {r.get("data-state") for r in bars if r.get("data-task") == "broken"} == {"failed"}
    for bar in bars:
        assert float(bar.get("width", "0")) >= 3
        title = bar.find(f"{SVG}title")
        assert title is not None and (title.text or "").startswith(f"{bar.get('data-task')}: attempt ")


def test_page_draws_backoffs_cache_hits_skips_and_the_critical_path(mixed_record: RunRecord) -> None:
    page = render_timeline(mixed_record)
    svg = _svg(page)

    def marks(tag: str, cls: str) -> list[ET.Element]:
        return [el for el in svg.iter(f"{SVG}{tag}") if cls in el.get("class", "").split()]

    backoffs = marks("rect", "backoff")
    assert [(b.get("data-task"), b.get("data-attempt")) for b in backoffs] == [("flaky", "1"), ("flaky", "2")]
    assert [m.get("data-task") for m in marks("polygon", "cache-hit")] == ["source"]
    assert [m.get("data-task") for m in marks("path", "m-skipped")] == ["after_broken"]
    assert critical_path(mixed_record) == ["source", "flaky", "total"]
    assert len(marks("path", "critical-link")) == 2
    assert {m.get("data-task") for m in marks("text", "critical")} == {"source", "flaky", "total"}
    assert "critical path: source → flaky → total" in page
    ticks = [t.text for t in marks("text", "tick")]
    assert ticks[0] == "0.00 s" and all((t or "").endswith(" s") for t in ticks)


def test_page_is_self_contained_and_escapes_text() -> None:
    rec = RunRecorder()
    e: dict[str, Any] = {"run_id": "r"}
    rec(asyncflow.RunStarted(**e, time=0.0, pipeline="p&q", tasks=1, upstream={"a": ()}))
    rec(asyncflow.TaskStarted(**e, time=0.0, task="a", attempt=1))
    error = ValueError('<script>alert("x")</script>')
    rec(asyncflow.AttemptFailed(**e, time=0.1, task="a", attempt=1, error=error, retry_in=None))
    rec(asyncflow.TaskFailed(**e, time=0.1, task="a", attempts=1, error=error, duration=0.1))
    rec(asyncflow.RunFinished(**e, time=0.1, pipeline="p&q", ok=False, duration=0.1, counts={}))
    page = render_timeline(rec.record())
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "p&amp;q" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "@import" not in page


def _chromium() -> tuple[object, object]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(
            f"needs Chromium ({CHROMIUM}) and its driver ({CHROMEDRIVER}): "
            "apt-get install chromium chromium-driver"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    return webdriver, Service


def test_chromium_loads_the_page_without_errors_and_draws_one_bar_per_attempt(
    mixed_record: RunRecord, tmp_path: Path
) -> None:
    webdriver, service = _chromium()
    page = tmp_path / "timeline.html"
    page.write_text(render_timeline(mixed_record), encoding="utf-8")
    options = webdriver.ChromeOptions()  # type: ignore[attr-defined]
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=service(CHROMEDRIVER), options=options)  # type: ignore[attr-defined,operator]
    try:
        driver.get(page.as_uri())
        drawn = driver.execute_script(
            """
            const out = {};
            for (const bar of document.querySelectorAll('#timeline rect.attempt')) {
                const box = bar.getBoundingClientRect();
                if (box.width > 0 && box.height > 0) {
                    out[bar.dataset.task] = (out[bar.dataset.task] || 0) + 1;
                }
            }
            return out;
            """
        )
        assert drawn == {k: v for k, v in ATTEMPTS.items() if v}
        assert driver.execute_script("return document.querySelectorAll('#timeline rect.attempt').length") == 5
        svg_width = driver.execute_script(
            "return document.getElementById('timeline').getBoundingClientRect().width"
        )
        assert svg_width > 800
        assert driver.title.startswith("asyncflow run ")
        problems = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert problems == []
    finally:
        driver.quit()
