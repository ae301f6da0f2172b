"""The FastAPI application: wires the database, the engine thread, the routers and the web UI.

    chatloop serve --host 127.0.0.1 --port 8000 --model default
    # or programmatically (tests): uvicorn.run(create_app(ServerConfig(...)))

At start it migrates the database, marks answers a crash left `streaming` as `interrupted`, and
loads the model on the engine's own thread.
"""

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from chatloop.config import get_settings
from chatloop.engine.scheduler import Engine
from chatloop.models.loading import load_model
from chatloop.server import errors
from chatloop.server.api import accounts, conversations, feedback
from chatloop.server.auth import authenticate
from chatloop.server.deps import ServerConfig, Services, services
from chatloop.server.errors import APIError
from chatloop.server.limits import BodySizeLimit, RateLimiter
from chatloop.server.metrics import Metrics, MetricsMiddleware
from chatloop.server.openai import routes as openai_routes
from chatloop.store.db import Database

log = logging.getLogger("chatloop.server")
WEB_DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
LOCALHOST = {"127.0.0.1", "::1", "localhost"}


def create_app(config: ServerConfig) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        db = Database(config.db_url or get_settings().db_url)
        interrupted = db.mark_interrupted()
        if interrupted:
            log.warning("marked %d answers interrupted by the last shutdown", interrupted)
        engine = await run_in_threadpool(
            Engine, lambda: load_model(config.model, config.dtype),
            max_batch=config.max_batch, max_waiting=config.max_waiting,
        )
        app.state.services = Services(config=config, db=db, engine=engine,
                                      limiter=RateLimiter(config.rate_limit_per_minute), metrics=metrics)
        log.info("serving %s (%s)", engine.model_id, engine.loaded.dtype)
        try:
            yield
        finally:
            engine.shutdown()
            db.dispose()

    app = FastAPI(title="chatloop", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible /v1 API and the chatloop app API (/api).")
    errors.install(app)
    app.include_router(openai_routes.router)
    app.include_router(accounts.router)
    app.include_router(conversations.router)
    app.include_router(feedback.router)

    @app.get("/healthz", tags=["ops"])
    def healthz(request: Request):
        svc = getattr(request.app.state, "services", None)
        return {"status": "ok" if svc else "starting", "model": svc.engine.model_id if svc else None}

    @app.get("/metrics", tags=["ops"])
    def prometheus(request: Request, svc: Services = Depends(services)):
        client = request.client.host if request.client else ""
        if client not in LOCALHOST:
            if not authenticate(request, svc.db).user.is_admin:
                raise APIError(403, "metrics are for administrators or localhost", code="forbidden")
        return Response(svc.metrics.render(svc.engine.stats()), media_type="text/plain; version=0.0.4")

    _mount_web(app, config.web_dir or WEB_DIST)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    return app


def _mount_web(app: FastAPI, web_dir: Path) -> None:
    """Serve the built UI; any non-API path falls back to index.html (client-side routes like /c/ID)."""
    index = web_dir / "index.html"
    if (web_dir / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=web_dir / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False)
    def spa(path: str):
        if path.startswith(("api/", "v1/")) or path in ("api", "v1"):
            raise APIError(404, f"no route /{path}", code="not_found")
        candidate = (web_dir / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(web_dir.resolve()):
            return FileResponse(candidate)
        if index.is_file():
            return FileResponse(index, headers={"Cache-Control": "no-cache"})
        return Response("chatloop: the web UI is not built (run `make setup`). The API is at /v1 and /api.",
                        media_type="text/plain")
