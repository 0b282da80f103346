"""Per-request observation: Prometheus metrics (one registry per app, no module globals), the
request id (``X-Request-Id``) and the one structured access-log line of each request. The same
registry carries the domain families read from the database at scrape time (:mod:`vault.ops`)."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vault.logs import REQUEST_ID
from vault.ops import metrics as domain

access_log = logging.getLogger("callvault.access")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "callvault_http_requests_total", "HTTP requests", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "callvault_http_request_seconds", "HTTP request latency", ["method", "route"],
            registry=self.registry,
        )  # fmt: skip

    def install(self, app: FastAPI) -> None:
        app.add_middleware(Observe, metrics=self)
        domain.install(self.registry, app.state.ctx)


class Observe:
    """Pure ASGI (not ``@app.middleware("http")``, whose ``BaseHTTPMiddleware`` pipes every body
    chunk, both ways, through an extra task and memory stream): it only sees the response start
    to add the request id and keep the status, and observes once the body is done."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = uuid.uuid4().hex
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - start
            # The template, never the raw URL: query strings carry call ids.
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, path, str(status[0])).inc()
            self.metrics.latency.labels(method, path).observe(elapsed)
            access_log.info(
                "request", extra={
                    "method": method, "route": path, "status": status[0],
                    "duration_ms": round(elapsed * 1000, 2),
                    "principal": scope.get("state", {}).get("principal"),
                },
            )  # fmt: skip
            REQUEST_ID.reset(token)
