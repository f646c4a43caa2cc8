"""``asyncflow.otel.OpenTelemetryListener``: the spans of real runs, caught by the SDK's
in-memory exporter, on asyncio and trio."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import anyio
import pytest
from mapped_pipeline import make
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import asyncflow
from asyncflow.otel import OpenTelemetryListener


@pytest.fixture
def exporter(caplog: pytest.LogCaptureFixture) -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()
    # The SDK only logs misuse (an attribute set on an ended span, say): make it fail the test.
    sdk_warnings = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]
    assert sdk_warnings == []


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def flaky_pipeline() -> asyncflow.Pipeline:
    pipeline = asyncflow.Pipeline("shop")
    calls: list[int] = []

    @pipeline.task
    async def fetch() -> list[int]:
        return [1, 2]

    @pipeline.task(retries=2, retry_delay=0.01)
    async def total(fetch: list[int]) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("flaky")
        return sum(fetch)

    return pipeline


async def test_span_tree_attributes_links_and_retries(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    before = time.time_ns()
    result = await flaky_pipeline().run(
        listeners=[OpenTelemetryListener(provider)], store=asyncflow.MemoryStore(), log=False
    )
    after = time.time_ns()
    assert result.ok
    spans = by_name(exporter.get_finished_spans())
    assert {name: len(s) for name, s in spans.items()} == {
        "run shop": 1,
        "task fetch": 1,
        "task total": 1,
        "attempt fetch": 1,
        "attempt total": 2,
    }
    (run,) = spans["run shop"]
    (fetch,) = spans["task fetch"]
    (total,) = spans["task total"]
    assert parent_id(run) is None
    assert parent_id(fetch) == parent_id(total) == span_id(run)
    assert [parent_id(a) for a in spans["attempt total"]] == [span_id(total)] * 2
    assert parent_id(spans["attempt fetch"][0]) == span_id(fetch)
    assert run.context is not None
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.context} == {run.context.trace_id}

    assert [link.context.span_id for link in total.links] == [span_id(fetch)]
    assert attrs(run) == {
        "asyncflow.run_id": result.run_id,
        "asyncflow.pipeline": "shop",
        "asyncflow.tasks": 2,
        "asyncflow.state": "ok",
        "asyncflow.count.succeeded": 2,
    }
    assert attrs(total) == {
        "asyncflow.run_id": result.run_id,
        "asyncflow.pipeline": "shop",
        "asyncflow.task": "total",
        "asyncflow.cache_hit": False,
        "asyncflow.cache_key": result.tasks["total"].cache_key,
        "asyncflow.attempts": 2,
        "asyncflow.state": "succeeded",
    }
    first, second = sorted(spans["attempt total"], key=lambda s: attrs(s)["asyncflow.attempt"])  # type: ignore[arg-type, return-value]
    assert attrs(first)["asyncflow.state"] == "retrying"
    assert attrs(first)["asyncflow.retry_delay_s"] == pytest.approx(0.01)
    assert attrs(first)["asyncflow.error.type"] == "ConnectionError"
    assert first.status.status_code is StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert attrs(second)["asyncflow.state"] == "succeeded"
    assert second.status.status_code is StatusCode.UNSET

    # wall-clock nanoseconds, nested in time as in the tree
    assert run.start_time is not None and run.end_time is not None
    # Span times are the event loop's clock plus an offset taken at RunStarted, so they may
    # stray from the wall clock by the offset's error (a listener called late, NTP): allow
    # 50 ms at either end; the order between spans is exact.
    slack = 50_000_000
    assert before - slack <= run.start_time <= fetch.start_time <= fetch.end_time <= total.start_time  # type: ignore[operator]
    ends = [first.end_time, second.start_time, second.end_time, total.end_time, run.end_time]
    assert all(t is not None for t in ends)
    assert ends == sorted(ends) and ends[-1] <= after + slack  # type: ignore[type-var, operator]
    assert second.start_time - first.end_time >= 0.009e9  # type: ignore[operator]  # the backoff


async def test_failed_task_and_skipped_downstream(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    pipeline = asyncflow.Pipeline("broken")

    @pipeline.task(retries=1, retry_delay=0)
    async def fetch() -> int:
        raise ValueError("down")

    @pipeline.task
    async def report(fetch: int) -> int:
        return fetch

    await pipeline.run(listeners=[OpenTelemetryListener(provider)], checkpoints=False, log=False)
    spans = by_name(exporter.get_finished_spans())
    (failed,) = spans["task fetch"]
    assert attrs(failed)["asyncflow.state"] == "failed"
    assert attrs(failed)["asyncflow.attempts"] == 2
    assert attrs(failed)["asyncflow.error.message"] == "down"
    assert "asyncflow.cache_hit" not in attrs(failed)  # no checkpoints, no cache
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: down"
    assert [attrs(a)["asyncflow.state"] for a in spans["attempt fetch"]] == ["retrying", "failed"]
    (skipped,) = spans["task report"]
    assert attrs(skipped)["asyncflow.state"] == "skipped"
    assert "fetch" in str(attrs(skipped)["asyncflow.reason"])
    assert skipped.start_time == skipped.end_time
    assert "attempt report" not in spans
    (run,) = spans["run broken"]
    assert attrs(run)["asyncflow.state"] == "failed"
    assert run.status.status_code is StatusCode.ERROR
    assert attrs(run)["asyncflow.count.failed"] == attrs(run)["asyncflow.count.skipped"] == 1


async def test_cached_tasks_have_zero_length_spans_with_their_key(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    pipeline, store = flaky_pipeline(), asyncflow.MemoryStore()
    first = await pipeline.run(store=store, log=False)
    await pipeline.run(listeners=[OpenTelemetryListener(provider)], store=store, log=False)
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"run shop", "task fetch", "task total"}
    for name in ("fetch", "total"):
        (task,) = spans[f"task {name}"]
        assert attrs(task)["asyncflow.cache_hit"] is True
        assert attrs(task)["asyncflow.cache_key"] == first.tasks[name].cache_key
        assert attrs(task)["asyncflow.state"] == "cached"
        assert task.start_time == task.end_time
    assert [link.context.span_id for link in spans["task total"][0].links] == [
        span_id(spans["task fetch"][0])
    ]


async def test_cancelled_run_ends_every_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    pipeline = asyncflow.Pipeline("slow")
    started = anyio.Event()

    @pipeline.task
    async def wait() -> None:
        started.set()
        await anyio.sleep_forever()

    @pipeline.task
    async def after(wait: None) -> None:
        pass

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await pipeline.run(listeners=[OpenTelemetryListener(provider)], checkpoints=False, log=False)

        tg.start_soon(run)
        await started.wait()
        tg.cancel_scope.cancel()

    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"run slow", "task wait", "attempt wait", "task after"}
    assert attrs(spans["attempt wait"][0])["asyncflow.state"] == "cancelled"
    assert attrs(spans["task wait"][0])["asyncflow.state"] == "cancelled"
    assert attrs(spans["task after"][0])["asyncflow.state"] == "cancelled"
    assert attrs(spans["run slow"][0])["asyncflow.state"] == "cancelled"
    assert spans["run slow"][0].status.status_code is StatusCode.ERROR


async def test_run_span_is_a_child_of_the_callers_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with provider.get_tracer("app").start_as_current_span("request") as outer:
        await flaky_pipeline().run(listeners=[OpenTelemetryListener(provider)], checkpoints=False, log=False)
    (run,) = by_name(exporter.get_finished_spans())["run shop"]
    assert parent_id(run) == outer.get_span_context().span_id


def test_import_without_the_api_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, Block())
        import asyncflow            # works without it
        try:
            import asyncflow.otel
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "asyncflow.otel needs the opentelemetry-api package" in done.stdout
    assert "pip install 'asyncflow-dag[otel]'" in done.stdout


def test_public_names_are_exactly_these() -> None:
    import asyncflow.otel as otel

    assert otel.__all__ == ["INSTRUMENTATION_NAME", "OpenTelemetryListener"]
    assert OpenTelemetryListener.__doc__ and "tracer_provider" in OpenTelemetryListener.__doc__


async def test_each_instance_is_a_span_under_its_mapped_task(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    result = await make(["u0", "flaky1", "bad2"]).run(
        listeners=[OpenTelemetryListener(provider)], checkpoints=False, log=False
    )
    assert not result.ok
    spans = by_name(exporter.get_finished_spans())
    one = {name: s[0] for name, s in spans.items() if name.startswith("task ")}
    assert set(one) == {"task urls", "task fetch", "task parse", "task summary"} | {
        f"task {g}[{k}]" for g in ("fetch", "parse") for k in range(3)
    }
    assert all(len(spans[name]) == 1 for name in one)
    (run,) = spans["run mapped"]
    fetch, parse = one["task fetch"], one["task parse"]
    assert parent_id(fetch) == parent_id(parse) == parent_id(one["task urls"]) == span_id(run)
    assert {k: v for k, v in attrs(fetch).items() if k in ("asyncflow.mapped", "asyncflow.instances")} == {
        "asyncflow.mapped": True,
        "asyncflow.instances": 3,
    }
    assert attrs(fetch)["asyncflow.over"] == ("urls",)
    assert attrs(fetch)["asyncflow.state"] == "failed" and fetch.status.status_code is StatusCode.ERROR
    for k in range(3):
        instance = one[f"task fetch[{k}]"]
        assert parent_id(instance) == span_id(fetch)
        assert [link.context.span_id for link in instance.links] == [span_id(one["task urls"])]
        chained = one[f"task parse[{k}]"]
        assert parent_id(chained) == span_id(parse)
        assert [link.context.span_id for link in chained.links] == [span_id(instance)]  # no barrier: its own
        assert fetch.start_time <= instance.start_time <= instance.end_time <= fetch.end_time  # type: ignore[operator]
    attempts = spans["attempt fetch[1]"]
    assert [parent_id(a) for a in attempts] == [span_id(one["task fetch[1]"])] * 2
    assert sorted(attrs(a)["asyncflow.state"] for a in attempts) == ["retrying", "succeeded"]  # type: ignore[type-var]
    assert attrs(one["task parse[2]"])["asyncflow.state"] == "skipped"
    assert [link.context.span_id for link in one["task summary"].links] == [span_id(parse)]
    assert attrs(run)["asyncflow.count.succeeded"] == 5  # urls and 2 + 2 instances
