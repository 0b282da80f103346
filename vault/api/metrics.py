"""Per-request observation: Prometheus metrics (one registry per app, no module globals), the
request id (``X-Request-Id``) and the one structured access-log line of each request."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

from vault.logs import REQUEST_ID

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
        @app.middleware("http")
        async def _observe(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            start = time.perf_counter()
            request_id = uuid.uuid4().hex
            token = REQUEST_ID.set(request_id)
            try:
                response = await call_next(request)
            finally:
                REQUEST_ID.reset(token)
            route = request.scope.get("route")
            # The template, never the raw URL: query strings carry call ids.
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - start
            self.requests.labels(request.method, path, str(response.status_code)).inc()
            self.latency.labels(request.method, path).observe(elapsed)
            response.headers["X-Request-Id"] = request_id
            token = REQUEST_ID.set(request_id)
            try:
                access_log.info(
                    "request", extra={
                        "method": request.method, "route": path, "status": response.status_code,
                        "duration_ms": round(elapsed * 1000, 2),
                        "principal": getattr(request.state, "principal", None),
                    },
                )  # fmt: skip
            finally:
                REQUEST_ID.reset(token)
            return response
