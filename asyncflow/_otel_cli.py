"""The command line's ``--otel``: export a run's spans with OTLP, configured by ``OTEL_*``.

``--otel`` builds an OpenTelemetry SDK ``TracerProvider`` with a ``BatchSpanProcessor``
and an OTLP span exporter, and adds an :class:`~asyncflow.otel.OpenTelemetryListener` on
it to the run. Everything else comes from the standard environment variables, read by
the SDK and the exporter themselves: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_EXPORTER_OTLP_TIMEOUT``, ``OTEL_SERVICE_NAME`` (default here: ``asyncflow``),
``OTEL_RESOURCE_ATTRIBUTES``, and ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` /
``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` (the default) or ``grpc``.

It needs one package beyond asyncflow: ``pip install opentelemetry-exporter-otlp`` (it
brings the SDK and both protocols; ``opentelemetry-exporter-otlp-proto-http`` alone is
enough for ``http/protobuf``). The spans are flushed when the process exits (the SDK's
own exit hook); a collector that does not answer delays that exit by at most
``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s unless set).
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from ._events import Listener

__all__ = ["EXPORTER_PACKAGE", "OtelSetupError", "add_arguments", "otlp_listener"]

EXPORTER_PACKAGE = "opentelemetry-exporter-otlp"
"""The package ``--otel`` needs (it depends on ``opentelemetry-sdk``)."""

_EXPORTERS = {
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
}


class OtelSetupError(Exception):
    """``--otel`` cannot be set up (a package is missing, an unknown protocol); one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--otel`` to ``parser``."""
    parser.add_argument(
        "--otel",
        action="store_true",
        help="export the run as OpenTelemetry spans (one per run, task and attempt) over OTLP, "
        "configured by the standard OTEL_* environment variables (OTEL_EXPORTER_OTLP_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf|grpc, OTEL_SERVICE_NAME, ...); needs "
        f"pip install {EXPORTER_PACKAGE}",
    )


def otlp_listener() -> Listener:
    """An :class:`~asyncflow.otel.OpenTelemetryListener` exporting through OTLP.

    Raises:
        OtelSetupError: the SDK or the exporter for the configured protocol is not
            installed, or ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` names an unsupported
            protocol (the message says which variable and which package).
    """
    variable = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    protocol = os.environ.get(variable)
    if not protocol:
        variable = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = os.environ.get(variable) or "http/protobuf"
    module_name = _EXPORTERS.get(protocol.strip())
    if module_name is None:
        raise OtelSetupError(
            f"--otel: {variable}={protocol!r} is not supported (use {' or '.join(_EXPORTERS)})"
        )
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from .otel import OpenTelemetryListener

        exporter_module: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise OtelSetupError(
            f"--otel needs the OTLP exporter, which is not installed ({exc}): pip install {EXPORTER_PACKAGE}"
        ) from None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource.create({"service.name": "asyncflow"}))
    provider = TracerProvider(resource=resource)  # flushed and shut down at exit by the SDK
    provider.add_span_processor(BatchSpanProcessor(exporter_module.OTLPSpanExporter()))
    return OpenTelemetryListener(provider)
