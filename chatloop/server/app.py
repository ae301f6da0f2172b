"""The FastAPI application: wires the database, the chat service (engine pool), the routers and the web UI.

    chatloop serve --host 127.0.0.1 --port 8000 --model default [--model runs:my-sft ...]
    # or programmatically: uvicorn.run(create_app(get_settings(), models=["default"]))

At start it migrates the database, marks answers a crash left `streaming` as `interrupted`,
registers the bundled default model when it is served, and loads the configured models (the first
is `default`), each on its engine's own thread, and starts the tools (built-ins, retrieval, and the
MCP servers and OpenAPI plugins of `--mcp-config`; one that fails to start is reported by
GET /api/tools and retried, it does not stop the server). Three tasks run beside the requests: the
engine pool's idle sweeper, the release watcher (serving/service.py) and the toolbox's re-listing
(a tool server that came back is offered again).

`serve_app` runs the app under uvicorn; a stop signal (Ctrl-C, SIGTERM from docker or systemd) that
arrives while the models are still loading ends the process at once (see `_Server`).
"""

import asyncio
import logging
import os
import signal
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor
from uvicorn import Config as UvicornConfig
from uvicorn import Server as UvicornServer

from chatloop.config import Settings
from chatloop.engine.remote import RemoteBackend
from chatloop.server import errors
from chatloop.server.api import accounts, conversations, dashboard, documents, feedback, releases, uploads
from chatloop.server.auth import authenticate
from chatloop.server.deps import Services, services
from chatloop.server.errors import APIError
from chatloop.server.limits import BodySizeLimit, RateLimiter
from chatloop.server.metrics import Metrics, MetricsMiddleware
from chatloop.server.openai import routes as openai_routes
from chatloop.server.routing import JSONRoute, errors_doc, openapi_schema
from chatloop.serving.images import ImageLimits, ImageReader
from chatloop.serving.plan import Limits
from chatloop.serving.pool import EnginePool
from chatloop.serving.service import ChatService
from chatloop.store.db import Database
from chatloop.tools.config import build_toolbox
from chatloop.tools.retrieval import MAX_DOCUMENT_BYTES

log = logging.getLogger("chatloop.server")
WEB_DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
LOCALHOST = {"127.0.0.1", "::1", "localhost"}


def create_app(settings: Settings, *, models: list[str], dtype: str = "auto", web_dir: Path | None = None) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        db = Database(settings.db_url)
        interrupted = db.mark_interrupted()
        if interrupted:
            log.warning("marked %d answers interrupted by the last shutdown", interrupted)
        pool = EnginePool(dtype=dtype, max_batch=settings.max_batch, max_waiting=settings.max_waiting,
                          max_extra=settings.max_loaded_models,
                          idle_seconds=settings.model_idle_seconds, prefix_cache_mb=settings.prefix_cache_mb,
                          device=settings.device)
        chat = ChatService(pool, db, models=models, limits=Limits.from_settings(settings), metrics=metrics,
                           poll_seconds=settings.release_poll_seconds,
                           images=ImageReader(ImageLimits.from_settings(settings)),
                           backend=RemoteBackend.parse(settings.backend, settings.backend_key) if settings.backend
                           else None)
        tools = build_toolbox(settings, db=db)
        tasks = []
        try:
            await chat.open()
            await tools.start()
            tasks = [asyncio.create_task(pool.run_sweeper()), asyncio.create_task(chat.watch_releases()),
                     asyncio.create_task(tools.watch())]
            app.state.services = Services(settings=settings, db=db, chat=chat,
                                          limiter=RateLimiter(settings.rate_limit_per_minute), metrics=metrics,
                                          tools=tools)
            log.info("serving %s", ", ".join(e.fixed.model_id if e.fixed else f"{e.name} (by release channel)"
                                             for e in chat.served))
            yield
        finally:
            for task in tasks:
                task.cancel()
            await tools.close()
            await pool.close()
            chat.images.close()
            db.dispose()

    app = FastAPI(title="chatloop", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible /v1 API and the chatloop app API (/api). Errors are "
                              "`{\"error\": {message, type, param, code}}`; a method a path does not have "
                              "answers 405 with an `Allow` header.")
    app.openapi = lambda: openapi_schema(app)
    errors.install(app)
    app.include_router(openai_routes.router)
    app.include_router(accounts.router)
    app.include_router(conversations.router)
    app.include_router(feedback.router)
    app.include_router(releases.router)
    app.include_router(dashboard.router)
    app.include_router(uploads.router)
    app.include_router(documents.router)
    app.include_router(ops)
    _mount_web(app, web_dir or WEB_DIST)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    with_image = settings.max_body_bytes + settings.max_image_bytes * 4 // 3 + 4  # base64 of one full-size image
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       paths={"/v1/chat/completions": with_image, "/api/uploads": settings.max_image_bytes,
                              "/api/documents": MAX_DOCUMENT_BYTES + (64 << 10)})  # + multipart framing
    return app


ops = APIRouter(tags=["ops"], route_class=JSONRoute)


class Health(BaseModel):
    status: Literal["ok", "starting"]
    model: str | None = Field(description="The exact version the default model is now.")


@ops.get("/healthz", response_model=Health)
def healthz(request: Request):
    svc = getattr(request.app.state, "services", None)
    return {"status": "ok" if svc else "starting", "model": svc.chat.default_id() if svc else None}


@ops.get("/metrics", response_class=PlainTextResponse, responses=errors_doc(
    (401, "Not from localhost and not authenticated."), (403, "Not from localhost and not an administrator.")))
def prometheus(request: Request, svc: Services = Depends(services)):
    """Prometheus text; for administrators, or anyone on localhost."""
    client = request.client.host if request.client else ""
    if client not in LOCALHOST:
        if not authenticate(request, svc.db).user.is_admin:
            raise APIError(403, "metrics are for administrators or localhost", code="forbidden")
    return Response(svc.metrics.render(svc.chat.stats()), media_type="text/plain; version=0.0.4")


class WebPath(Convertor):
    """Any path outside /api and /v1: those are the API's, which answer 404 or 405 themselves."""

    regex = r"(?!(?:api|v1)(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("web", WebPath())


def _mount_web(app: FastAPI, web_dir: Path) -> None:
    """Serve the built UI; any non-API path falls back to index.html (client-side routes like /c/ID)."""
    index = web_dir / "index.html"
    if (web_dir / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=web_dir / "assets"), name="assets")

    @app.get("/{path:web}", include_in_schema=False)
    def spa(path: str):
        candidate = (web_dir / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(web_dir.resolve()):
            return FileResponse(candidate)
        if index.is_file():
            return FileResponse(index, headers={"Cache-Control": "no-cache"})
        return Response("chatloop: the web UI is not built (run `make setup`). The API is at /v1 and /api.",
                        media_type="text/plain")


class _Server(UvicornServer):
    """uvicorn notes a stop signal but acts on it only once start-up has ended, and a model's first
    start converts it and measures its kernels for a minute or two (docs/engine.md): a Ctrl-C or a
    SIGTERM (docker stop, systemd) was then ignored until the server had started. A signal before
    start-up ends now ends the process at once, by that signal, as a program without handlers
    would. Nothing has been served yet, and what loading writes (the converted model, the kernel
    measurement) is written whole or not at all: a measurement cut short runs again at the next
    start. (A normal exit would wait for the thread still loading the model.)"""

    def handle_exit(self, sig: int, frame) -> None:
        if self.started:
            super().handle_exit(sig, frame)
            return
        try:
            log.warning("stopped (%s) while starting up; exiting without waiting for the models to load",
                        signal.Signals(sig).name)
            logging.shutdown()  # flush the log: nothing runs after the signal
        finally:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            os._exit(128 + sig)  # as PID 1 (a container without an init) a default action is ignored


def serve_app(app: FastAPI, *, host: str, port: int, log_config: dict) -> bool:
    """Run `app` under uvicorn until it is stopped; False if it failed to start (logged; uvicorn 0.55
    exits with 3 itself then). A Ctrl-C after start-up ends it gracefully, as `uvicorn.run` does."""
    server = _Server(UvicornConfig(app, host=host, port=port, log_config=log_config, timeout_graceful_shutdown=5))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises the SIGINT it caught again once it has shut down
        pass
    return server.started
