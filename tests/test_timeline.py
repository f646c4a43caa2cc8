"""The timeline page: critical path, the marks it draws, mapped tasks as groups, and a real
headless Chromium loading it."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mapped_pipeline import make
from mixed_pipeline import ATTEMPTS
from mixed_pipeline import pipeline as mixed

import asyncflow
from asyncflow._record_groups import SLOWEST_SHOWN
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


@contextlib.contextmanager
def _browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium driven by selenium, logging the page's console messages."""
    webdriver, service = _chromium()
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
        yield driver
    finally:
        driver.quit()


def test_chromium_loads_the_page_without_errors_and_draws_one_bar_per_attempt(
    mixed_record: RunRecord, tmp_path: Path
) -> None:
    page = tmp_path / "timeline.html"
    page.write_text(render_timeline(mixed_record), encoding="utf-8")
    with _browser(tmp_path) as driver:
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


# -- mapped tasks --------------------------------------------------------------------------------

ITEMS = [
    "bad7" if k == 7 else "flaky3" if k == 3 else f"slow{k}" if k in (12, 20) else f"u{k}" for k in range(30)
]
"""30 items: fetch[7] fails, fetch[3] is retried, fetch[12] and fetch[20] are slow."""


def _mapped_record(items: list[str]) -> RunRecord:
    recorder = RunRecorder()
    make(items).run_sync(log=False, checkpoints=False, listeners=[recorder], workdir=tempfile.mkdtemp())
    return recorder.record()


@pytest.fixture(scope="module")
def mapped_record() -> RunRecord:
    """A run of the mapped pipeline over :data:`ITEMS`: groups of 30, collapsed."""
    return _mapped_record(ITEMS)


def _labels(svg: ET.Element) -> list[ET.Element]:
    return [t for t in svg.iter(f"{SVG}text") if "label" in t.get("class", "").split()]


def test_critical_path_goes_through_instances_not_their_mapped_task() -> None:
    rec = RunRecorder()
    e: dict[str, Any] = {"run_id": "r"}
    upstream = {"urls": (), "fetch": ("urls",), "parse": ("fetch",), "summary": ("parse",)}
    rec(asyncflow.RunStarted(**e, time=0.0, pipeline="p", tasks=4, upstream=upstream))

    def ran(task: str, start: float, end: float) -> None:
        rec(asyncflow.TaskStarted(**e, time=start, task=task, attempt=1))
        rec(asyncflow.TaskSucceeded(**e, time=end, task=task, attempt=1, duration=end - start))

    ran("urls", 0, 1)
    rec(asyncflow.TaskMapped(**e, time=1, task="fetch", instances=("fetch[0]", "fetch[1]"), over=("urls",)))
    rec(asyncflow.TaskMapped(**e, time=1, task="parse", instances=("parse[0]", "parse[1]"), over=("fetch",)))
    ran("fetch[0]", 1, 2)  # then parse[0] for 5 s: 1 + 1 + 5 + 1 = 8 s
    ran("fetch[1]", 1, 4)  # then parse[1] for 1 s: 1 + 3 + 1 + 1 = 6 s
    ran("parse[0]", 2, 7)
    ran("parse[1]", 4, 5)
    rec(asyncflow.TaskSucceeded(**e, time=4, task="fetch", attempt=0, duration=3))
    rec(asyncflow.TaskSucceeded(**e, time=7, task="parse", attempt=0, duration=6))
    ran("summary", 7, 8)
    rec(asyncflow.RunFinished(**e, time=8, pipeline="p", ok=True, duration=8, counts={}))
    record = rec.record()
    assert record.tasks["parse[1]"].upstream == ("fetch[1]",)
    assert critical_path(record) == ["urls", "fetch[0]", "parse[0]", "summary"]
    page = render_timeline(record)
    assert "critical path: urls → fetch[0] → parse[0] → summary (8.0" in page
    assert len([p for p in _svg(page).iter(f"{SVG}path") if p.get("class") == "critical-link"]) == 3


def test_a_large_mapped_task_is_one_group_collapsed_to_its_failed_and_slowest(
    mapped_record: RunRecord,
) -> None:
    page = render_timeline(mapped_record)
    svg = _svg(page)
    labels = _labels(svg)
    heads = {t.get("data-group"): t for t in labels if "group-label" in t.get("class", "").split()}
    assert set(heads) == {"fetch", "parse"}
    fetch = heads["fetch"]
    assert (fetch.get("data-instances"), fetch.get("data-collapsed")) == ("30", "true")
    assert "".join(fetch.itertext()).endswith("fetch[*]")
    title = fetch.find(f"{SVG}title")
    assert title is not None and "fetch[*]: failed, 30 instances: 29 succeeded, 1 failed" in (
        title.text or ""
    )
    assert "failed: fetch[7]" in (title.text or "") and "slowest: fetch[" in (title.text or "")
    rows = [t.get("data-task", "") for t in labels if t.get("data-parent") == "fetch"]
    assert {"fetch[7]", "fetch[12]", "fetch[20]"} <= set(rows)  # the failed one and the slow ones
    on_path = [n for n in critical_path(mapped_record) if n.startswith("fetch[")]
    assert len(rows) <= 1 + SLOWEST_SHOWN + len(on_path)
    assert int(fetch.get("data-shown", "0")) <= 1 + SLOWEST_SHOWN < 30
    assert rows == sorted(rows, key=lambda n: int(n[6:-1]))  # in item order
    bars = [r for r in svg.iter(f"{SVG}rect") if "attempt" in r.get("class", "").split()]
    fetch_bars = Counter(r.get("data-task") for r in bars if r.get("data-parent") == "fetch")
    assert set(fetch_bars) == set(rows)  # only the shown instances are drawn
    assert fetch_bars["fetch[7]"] == 2
    assert [r.get("data-state") for r in bars if r.get("data-task") == "fetch[7]"] == ["retrying", "failed"]
    more = [t for t in svg.iter(f"{SVG}text") if "more" in t.get("class", "").split()]
    assert [(m.get("data-group"), m.get("data-hidden")) for m in more if m.get("data-group") == "fetch"] == [
        ("fetch", str(30 - len(rows)))
    ]
    notes = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "more-note"]
    assert f"{30 - len(rows)} more instances of fetch not drawn: {30 - len(rows)} succeeded" in notes
    # Rows in order: the group's head, its instances, its "more" row, then the next task.
    order = [t.get("data-task") or f"more {t.get('data-group')}" for t in labels]
    head = order.index("fetch")
    assert order[head + 1 : head + 1 + len(rows)] == rows
    assert order[head + 1 + len(rows)] == "more fetch"
    assert order.index("urls") < head < order.index("parse") < order.index("summary")
    spans = {
        r.get("data-task"): r for r in svg.iter(f"{SVG}rect") if "group-span" in r.get("class", "").split()
    }
    assert set(spans) == {"fetch", "parse"}
    first = min(float(r.get("x", "0")) for r in bars if r.get("data-parent") == "fetch")
    assert float(spans["fetch"].get("x", "0")) <= first + 0.1
    assert "59 succeeded, 2 skipped, 1 failed" in page or "59 succeeded, 1 failed, 2 skipped" in page
    assert "<td>fetch[*]</td><td>failed</td>" in page and "mapped over urls: 30 instances" in page
    assert page.count('<tr class="instance"><td>fetch[') == len(rows)  # the table groups the same way


def test_a_small_mapped_task_shows_every_instance() -> None:
    page = render_timeline(_mapped_record(["a", "b", "c"]))
    svg = _svg(page)
    labels = _labels(svg)
    heads = {t.get("data-group"): t for t in labels if "group-label" in t.get("class", "").split()}
    assert [
        (h.get("data-instances"), h.get("data-shown"), h.get("data-collapsed")) for h in heads.values()
    ] == [("3", "3", "false")] * 2
    for group in ("fetch", "parse"):
        assert [t.get("data-task") for t in labels if t.get("data-parent") == group] == [
            f"{group}[{k}]" for k in range(3)
        ]
    assert not [t for t in svg.iter(f"{SVG}text") if "more" in t.get("class", "").split()]


def test_chromium_shows_a_mapped_run_grouped_and_collapsed(mapped_record: RunRecord, tmp_path: Path) -> None:
    page = tmp_path / "mapped.html"
    page.write_text(render_timeline(mapped_record), encoding="utf-8")
    with _browser(tmp_path) as driver:
        driver.get(page.as_uri())
        seen = driver.execute_script(
            """
            const visible = (el) => {
                const b = el.getBoundingClientRect();
                return b.width > 0 && b.height > 0;
            };
            const own = (el) => {  // the text drawn, less the tooltip's
                const title = el.querySelector('title');
                return el.textContent.replace(title ? title.textContent : '', '').trim();
            };
            const out = {groups: {}};
            for (const head of document.querySelectorAll('#timeline text.group-label')) {
                const g = head.dataset.group;
                const top = head.getBoundingClientRect().top;
                const rows = [...document.querySelectorAll(`#timeline text.label[data-parent="${g}"]`)];
                const more = document.querySelector(`#timeline text.more[data-group="${g}"]`);
                const span = document.querySelector(`#timeline rect.group-span[data-task="${g}"]`);
                out.groups[g] = {
                    text: own(head),
                    visible: visible(head),
                    collapsed: head.dataset.collapsed,
                    instances: Number(head.dataset.instances),
                    rows: rows.filter(visible).map(own),
                    below: rows.every((r) => r.getBoundingClientRect().top > top),
                    bars: new Set([...document.querySelectorAll(`#timeline rect.attempt[data-parent="${g}"]`)]
                        .filter(visible).map((r) => r.dataset.task)).size,
                    more: more && visible(more) ? more.textContent : null,
                    spanWidth: span ? span.getBoundingClientRect().width : 0,
                };
            }
            return out;
            """
        )
        problems = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    fetch = seen["groups"]["fetch"]
    assert fetch["visible"] and fetch["text"] == "fetch[*]"
    assert (fetch["collapsed"], fetch["instances"]) == ("true", 30)
    shown = len(fetch["rows"])
    assert 3 <= shown < 30 and {"fetch[7]", "fetch[12]", "fetch[20]"} <= set(fetch["rows"])
    assert fetch["below"] and fetch["bars"] == shown
    assert fetch["more"] == f"… {30 - shown} more"
    assert fetch["spanWidth"] > 100  # from the first instance's start to the last one's end
    assert set(seen["groups"]) == {"fetch", "parse"}
    assert problems == []
