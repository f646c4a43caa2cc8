"""The pytest plugin ``asyncflow.testing``, exercised in pytest's own ``pytester`` sandbox.

Each test writes a user's pipeline and test file, runs pytest on them in-process and
checks the outcomes, so the plugin is tested the way users meet it: loaded through its
``pytest11`` entry point, on both anyio backends.
"""

from __future__ import annotations

import textwrap
import time

import pytest

from asyncflow import Pipeline
from asyncflow.testing import assert_failed, assert_succeeded, replaced

pytest_plugins = ["pytester"]

USER_PIPELINE = textwrap.dedent(
    """
    import asyncflow

    pipeline = asyncflow.Pipeline("shop", params={"n": 2})

    @pipeline.task(retries=3, retry_delay=120, backoff=2)     # minutes of backoff
    async def fetch(params) -> list[int]:
        raise ConnectionError("no network in tests")

    @pipeline.task
    def total(fetch: list[int]) -> int:
        return sum(fetch)
    """
)


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(shop=USER_PIPELINE)
    pytester.makeini("[pytest]\nanyio_mode = auto\nfilterwarnings = error\n")
    pytester.syspathinsert()
    return pytester


def test_fixture_runs_on_both_backends_with_a_fake_and_virtual_time(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        test_shop=textwrap.dedent(
            """
            import time
            import pytest
            from asyncflow.testing import assert_succeeded
            from shop import pipeline

            @pytest.fixture(params=["asyncio", "trio"])
            def anyio_backend(request):
                return request.param

            def test_flaky_fetch_is_retried(run_pipeline, anyio_backend):
                calls = []
                async def fake_fetch(params):
                    calls.append(1)
                    if len(calls) < 3:
                        raise ConnectionError("flaky")
                    return list(range(params["n"]))
                start = time.perf_counter()
                result = run_pipeline(pipeline, overrides={"fetch": fake_fetch}, virtual_time=True)
                assert time.perf_counter() - start < 5          # 6 minutes of backoff, virtual
                assert_succeeded(result)
                assert result.tasks["fetch"].attempts == 3
                assert result.tasks["total"].result == 1
                assert result.duration >= 120    # two waits capped at max_delay=60 s, virtual
                assert run_pipeline.backend == anyio_backend
                assert not (run_pipeline.workdir / "checkpoints").exists()   # the store is in memory
            """
        )
    )
    outcome = user_project.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=2)


def test_helpers_name_task_state_attempts_and_error(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        test_shop=textwrap.dedent(
            """
            from asyncflow.testing import assert_succeeded
            from shop import pipeline

            def test_real_fetch(run_pipeline):
                result = run_pipeline(pipeline, virtual_time=True)
                assert_succeeded(result, "fetch", "total")
            """
        )
    )
    outcome = user_project.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    outcome.assert_outcomes(failed=2)  # once per backend: anyio's default parametrisation
    outcome.stdout.fnmatch_lines(
        [
            "*expected succeeded, but task 'fetch' is failed after 4 attempts; "
            "error: ConnectionError: no network in tests",
            "*and task 'total' is skipped after 0 attempts; reason: *fetch*",
        ]
    )
    assert "hint" not in outcome.stderr.str()


def test_async_tests_share_the_loop_and_take_virtual_time_backends(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        test_shop=textwrap.dedent(
            """
            import time
            import anyio
            import pytest
            import asyncflow.testing as aft
            from shop import pipeline

            @pytest.fixture(params=aft.virtual_time_backends())
            def anyio_backend(request):
                return request.param

            async def test_inside_the_loop(run_pipeline, replace_task):
                async def fake_fetch(params):
                    await anyio.sleep(3600)                  # an hour, virtually
                    return [5]
                replace_task(pipeline, "fetch", fake_fetch)
                start = time.perf_counter()
                first = await run_pipeline.run(pipeline)
                aft.assert_succeeded(first)
                second = await run_pipeline.run(pipeline)    # same store: checkpoints found
                aft.assert_cached(second)
                assert time.perf_counter() - start < 5

            def test_the_fake_is_gone_after_the_test():
                assert pipeline.tasks["fetch"].fn.__name__ == "fetch"
            """
        )
    )
    outcome = user_project.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=3)


def test_nothing_is_printed_by_a_run(user_project: pytest.Pytester) -> None:
    user_project.makepyfile(
        test_shop=textwrap.dedent(
            """
            from shop import pipeline

            def test_quiet(run_pipeline, capfd):
                run_pipeline(pipeline, virtual_time=True)
                out, err = capfd.readouterr()
                assert (out, err) == ("", "")
            """
        )
    )
    user_project.runpytest_inprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)


# -- the helpers themselves, without pytester --------------------------------------------


def make_pipeline() -> Pipeline:
    pipeline = Pipeline("p")

    @pipeline.task(retries=1, retry_delay=30)
    async def fetch() -> int:
        raise ValueError("down")

    @pipeline.task
    async def use(fetch: int) -> int:
        return fetch

    return pipeline


def test_replaced_restores_the_original_and_checks_the_signature() -> None:
    pipeline = make_pipeline()
    original = pipeline.tasks["fetch"]

    async def fake() -> int:
        return 7

    with replaced(pipeline, "fetch", fake) as task:
        assert task.fn is fake and task.retry == original.retry
        result = pipeline.run_sync(checkpoints=False, log=False)
        assert_succeeded(result)
        assert result.tasks["use"].result == 7
    assert pipeline.tasks["fetch"] is original

    async def wrong(other: int) -> int:
        return other

    accepts = r"replacement for task 'use' must accept the arguments \(fetch\)"
    with pytest.raises(TypeError, match=accepts), replaced(pipeline, "use", wrong):
        pass
    unknown = r"no task 'fetc'; did you mean 'fetch'\?"
    with pytest.raises(ValueError, match=unknown), replaced(pipeline, "fetc", fake):
        pass


def test_assert_failed_returns_the_error_and_checks_attempts() -> None:
    start = time.perf_counter()
    from asyncflow.testing import PipelineRunner

    runner = PipelineRunner("asyncio", {}, __import__("pathlib").Path("/nonexistent-unused"))
    result = runner(make_pipeline(), virtual_time=True, checkpoints=False)
    assert time.perf_counter() - start < 5
    error = assert_failed(result, "fetch", error=ValueError, match="down", attempts=2)
    assert isinstance(error, ValueError)
    with pytest.raises(AssertionError, match=r"expected 'fetch' to fail after 3 attempts, but task 'fetch'"):
        assert_failed(result, "fetch", attempts=3)
    with pytest.raises(AssertionError, match=r"has no task 'nope' \(tasks: fetch, use\)"):
        assert_succeeded(result, "nope")


def test_public_names_are_exactly_these_and_documented() -> None:
    import asyncflow.testing as testing

    assert testing.__all__ == [
        "PipelineRunner",
        "VirtualTimeEventLoop",
        "assert_cached",
        "assert_cancelled",
        "assert_failed",
        "assert_skipped",
        "assert_succeeded",
        "replace_task",
        "replaced",
        "run_pipeline",
        "virtual_time_backends",
        "virtual_time_options",
    ]
    for name in testing.__all__:
        assert getattr(testing, name).__doc__, name
