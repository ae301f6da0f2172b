"""Prometheus metrics (prometheus-client), one registry per app so tests can run several apps.

The chat service's one streaming loop (serving/run.py) keeps the generation metrics
(`observe_generation`, `active_streams`); the middleware below keeps the HTTP ones.
"""

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("chatloop_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("chatloop_http_request_seconds", "HTTP request latency", ["route"], registry=r)
        self.ttft = Histogram("chatloop_time_to_first_token_seconds", "Time to first token", registry=r,
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
        self.tokens = Counter("chatloop_generated_tokens", "Completion tokens generated", registry=r)
        self.prompt_tokens = Counter("chatloop_prompt_tokens", "Prompt tokens processed", registry=r)
        self.cached_tokens = Counter("chatloop_prompt_cached_tokens",
                                     "Prompt tokens taken from the prefix cache instead of prefilled", registry=r)
        self.prefix_bytes = Gauge("chatloop_prefix_cache_bytes", "Bytes of KV blocks held by the prefix caches",
                                  registry=r)
        self.active_streams = Gauge("chatloop_active_streams", "Responses currently streaming", registry=r)
        self.queue_depth = Gauge("chatloop_engine_queue_depth", "Requests waiting for the engine", registry=r)
        self.batch = Gauge("chatloop_engine_active_sequences", "Sequences in the running batches", registry=r)
        self.loaded = Gauge("chatloop_models_loaded", "Model versions loaded in the engine pool", registry=r)

    def observe_generation(self, result) -> None:
        self.tokens.inc(result.completion_tokens)
        self.prompt_tokens.inc(result.prompt_tokens)
        self.cached_tokens.inc(result.cached_tokens)
        if result.ttft_s is not None:
            self.ttft.observe(result.ttft_s)

    def render(self, engine_stats: dict) -> bytes:
        """The exposition text; `engine_stats` are the pool's totals (serving/pool.py `stats`)."""
        self.queue_depth.set(engine_stats["waiting"])
        self.batch.set(engine_stats["active"])
        self.loaded.set(len(engine_stats["loaded"]))
        self.prefix_bytes.set(engine_stats.get("prefix_cache_bytes", 0))
        return generate_latest(self.registry)


access_log = logging.getLogger("chatloop.access")


class MetricsMiddleware:
    """ASGI middleware counting requests by route template, timing them, and logging each one."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/assets") else "other")
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(elapsed)
            client = scope.get("client") or ("", 0)
            access_log.info("%s %s %s", scope["method"], scope["path"], status["code"], extra={
                "method": scope["method"], "path": scope["path"], "route": path, "status": status["code"],
                "latency_ms": round(elapsed * 1000, 1), "client": client[0]})
