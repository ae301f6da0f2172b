"""A small todo API the OpenAPI plugin tests call over real HTTP (tests/integration/test_openapi_plugins.py).

    with serve(token="secret") as service:    # uvicorn on a free port, in a thread
        service.url                            # http://127.0.0.1:PORT; /openapi.json, /.well-known/ai-plugin.json
        service.paths                          # the raw paths (bytes) of every request it answered
"""

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

OPENAPI_YAML = Path(__file__).with_name("todo-openapi.yaml")
BIG_BYTES = 1_500_000  # GET /export: more than the plugin reads of an answer


class NewTodo(BaseModel):
    title: str
    done: bool = False


class Todo(NewTodo):
    id: str


@dataclass
class Service:
    url: str
    app: FastAPI
    paths: list[bytes] = field(default_factory=list)


def make_app(token: str, other_origin: str) -> FastAPI:
    """The todo API; every route but the two documents needs `Authorization: Bearer TOKEN`.
    `other_origin` is where GET /elsewhere redirects (another host)."""
    app = FastAPI(title="Todo API", description="Keeps a to-do list.", version="1.0")
    todos: dict[str, Todo] = {"1": Todo(id="1", title="buy milk"), "2": Todo(id="2", title="write tests", done=True)}
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None or not secrets.compare_digest(credentials.credentials, token):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def record(request: Request, call_next):
        app.state.paths.append(request.scope.get("raw_path") or request.url.path.encode())
        return await call_next(request)

    @app.get("/todos", operation_id="listTodos", summary="List the to-dos", dependencies=[Depends(authorized)])
    def list_todos(limit: int = Query(10, ge=1, le=100, description="At most this many"),
                   done: bool | None = None) -> list[Todo]:
        return [t for t in todos.values() if done is None or t.done == done][:limit]

    # `:path`: uvicorn decodes %2F before routing; this way an id with slashes still reaches the handler
    @app.get("/todos/{todo_id:path}", operation_id="getTodo", summary="One to-do", dependencies=[Depends(authorized)])
    def get_todo(todo_id: str) -> Todo:
        if todo_id not in todos:
            raise HTTPException(404, f"no to-do {todo_id!r}")
        return todos[todo_id]

    @app.post("/todos", operation_id="createTodo", summary="Add a to-do", status_code=201,
              dependencies=[Depends(authorized)])
    def create_todo(new: NewTodo) -> Todo:
        todo = Todo(id=str(max(map(int, todos), default=0) + 1), **new.model_dump())
        todos[todo.id] = todo
        return todo

    @app.delete("/todos/{todo_id}", operation_id="deleteTodo", summary="Remove a to-do", status_code=204,
                dependencies=[Depends(authorized)])
    def delete_todo(todo_id: str) -> None:
        if todos.pop(todo_id, None) is None:
            raise HTTPException(404, f"no to-do {todo_id!r}")

    @app.get("/echo", operation_id="echo", summary="The query and header values it got",
             dependencies=[Depends(authorized)])
    def echo(tag: list[str] = Query([]), x_trace: str | None = Header(None)) -> dict:
        return {"tag": tag, "trace": x_trace}

    @app.get("/export", operation_id="exportAll", summary="Everything as text", response_class=PlainTextResponse,
             dependencies=[Depends(authorized)])
    def export() -> str:
        return "x" * BIG_BYTES

    @app.get("/old-todos", operation_id="oldTodos", summary="Moved to /todos", dependencies=[Depends(authorized)])
    def old_todos() -> RedirectResponse:
        return RedirectResponse("/todos?limit=1", status_code=307)

    @app.get("/elsewhere", operation_id="elsewhere", summary="Moved to another host",
             dependencies=[Depends(authorized)])
    def elsewhere() -> RedirectResponse:
        return RedirectResponse(f"{other_origin}/todos", status_code=302)

    @app.get("/.well-known/ai-plugin.json", include_in_schema=False)
    def manifest() -> dict:
        return {"schema_version": "v1", "name_for_human": "Todo", "name_for_model": "todo",
                "description_for_human": "Your to-do list.",
                "description_for_model": "Manage the user's to-do list: list, read, add and remove items.",
                "auth": {"type": "service_http", "authorization_type": "bearer",
                         "verification_tokens": {"openai": "unused"}},
                "api": {"type": "openapi", "url": "/openapi.json"},
                "logo_url": "/logo.png", "contact_email": "todo@example.com", "legal_info_url": "/legal"}

    app.state.paths = []
    return app


@contextmanager
def serve(token: str = "secret") -> Iterator[Service]:
    """The todo API on 127.0.0.1 at a free port until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Redirects "elsewhere" go to localhost: the same machine under another host name.
    app = make_app(token, f"http://localhost:{port}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the todo service did not start")
        time.sleep(0.02)
    try:
        yield Service(f"http://127.0.0.1:{port}", app, app.state.paths)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
