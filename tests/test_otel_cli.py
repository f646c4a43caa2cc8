"""The command line's ``--otel``: spans reach an OTLP/HTTP collector configured by ``OTEL_*``."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PIPELINE = textwrap.dedent(
    """
    import asyncflow

    pipeline = asyncflow.Pipeline("tiny")

    @pipeline.task
    async def numbers() -> list[int]:
        return [1, 2, 3]

    @pipeline.task
    def total(numbers: list[int]) -> int:
        return sum(numbers)
    """
)

BLOCKED_RUN = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry.exporter" or name.startswith("opentelemetry.exporter."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Block())
    from asyncflow._cli import main

    sys.exit(main(sys.argv[1:]))
    """
)


class Collector(http.server.BaseHTTPRequestHandler):
    """Keeps the body of every POST to /v1/traces; answers 200."""

    bodies: list[bytes]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        if self.path == "/v1/traces":
            self.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []
    handler = type("Handler", (Collector,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


def cli(
    *args: str | Path, cwd: Path, env: dict[str, str], code: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = (
        [sys.executable, "-c", code, *map(str, args)]
        if code
        else [sys.executable, "-m", "asyncflow", *map(str, args)]
    )
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_otel_exports_run_task_and_attempt_spans(
    tmp_path: Path, collector: tuple[str, list[bytes]], backend: str
) -> None:
    trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    (tmp_path / "tiny.py").write_text(PIPELINE)
    endpoint, bodies = collector
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "shop-ci"}
    done = cli("tiny.py", "--otel", "--backend", backend, "--workdir", tmp_path / "w", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    names, services = [], set()
    for body in bodies:
        request = trace_service.ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "asyncflow"
                names += [span.name for span in scope_spans.spans]
    assert sorted(names) == ["attempt numbers", "attempt total", "run tiny", "task numbers", "task total"]
    assert services == {"shop-ci"}


def test_otel_without_the_exporter_is_a_one_line_usage_error(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(PIPELINE)
    done = cli("tiny.py", "--otel", "--workdir", tmp_path / "w", cwd=tmp_path, env={}, code=BLOCKED_RUN)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("asyncflow: error: --otel needs the OTLP exporter, which is not installed")
    assert line.endswith(": pip install opentelemetry-exporter-otlp")
    assert not (tmp_path / "w").exists()


def test_otel_with_an_unknown_protocol_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(PIPELINE)
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": ""}
    done = cli("tiny.py", "--otel", "--workdir", tmp_path / "w", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "asyncflow: error: --otel: OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported "
        "(use http/protobuf or grpc)"
    ]
