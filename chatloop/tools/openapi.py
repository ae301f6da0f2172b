"""OpenAPI plugins: every operation of an HTTP API, described by an OpenAPI 3.x document (directly,
or through a ChatGPT-plugins `ai-plugin.json` manifest), as a tool (docs/plugins.md).

    plugins = plugin_sources({"todo": {"manifest": "https://todo.example/.well-known/ai-plugin.json",
                                       "auth": {"type": "bearer", "token_env": "TODO_TOKEN"}}})
    toolbox = Toolbox(plugins)   # tools todo__listTodos, todo__createTodo, ...

An operation's tool takes its path, query and header parameters and its JSON request body (the
body's properties merged in when it is an object whose property names clash with no parameter,
else one `body` argument). GET and HEAD operations are read-only. A call reaches only the plugin's
base URL (redirects elsewhere are refused), path values are percent-encoded as one segment each,
and at most MAX_RESPONSE_BYTES of an answer are read.
"""

import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import yaml

from chatloop.errors import UsageError
from chatloop.tools.base import CallContext, ToolError, ToolOutput, ToolSpec
from chatloop.tools.openapi_spec import Operation, operations

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 5 << 20  # a manifest or an OpenAPI document
MAX_RESPONSE_BYTES = 1 << 20  # what a call reads of an answer (the toolbox cuts the model's share further)
MAX_REDIRECTS = 5
PLUGIN_NOTE = 300  # characters of the plugin's own description put in front of each tool's
DEFAULT_TIMEOUT_S = 30.0
CONFIG_KEYS = {"manifest", "openapi", "base_url", "auth", "timeout_s"}


def plugin_sources(config: dict[str, dict]) -> list["OpenApiPlugin"]:
    """The sources of a tools config file's `"openapiPlugins"` object ({NAME: {...}})."""
    if not isinstance(config, dict):
        raise UsageError("openapiPlugins must be an object of plugin name -> settings")
    return [OpenApiPlugin(name, settings) for name, settings in config.items()]


class OpenApiPlugin:
    """One HTTP API as a tool source: `start()` reads its documents, `call()` sends one request."""

    def __init__(self, name: str, config: dict):
        if not isinstance(name, str) or not name.strip():
            raise UsageError("an OpenAPI plugin needs a name (the key in openapiPlugins)")
        self.name = name
        if not isinstance(config, dict):
            raise self._error("settings", "must be an object")
        unknown = sorted(set(config) - CONFIG_KEYS)
        if unknown:
            raise self._error(unknown[0], f"unknown setting (known: {', '.join(sorted(CONFIG_KEYS))})")
        if ("manifest" in config) == ("openapi" in config):
            raise self._error("manifest", "give exactly one of `manifest` (an ai-plugin.json) and `openapi` "
                                          "(an OpenAPI document)")
        self.kind = "manifest" if "manifest" in config else "openapi"
        self.location = config[self.kind]
        if not isinstance(self.location, str) or not self.location.strip():
            raise self._error(self.kind, "must be a path or an http(s) URL")
        _check_location(self.location, lambda why: self._error(self.kind, why))
        self.base_url = config.get("base_url")
        if self.base_url is not None:
            if not isinstance(self.base_url, str):
                raise self._error("base_url", "must be an http(s) URL")
            self.base_url = self._base(self.base_url, "base_url")
        self.timeout_s = config.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float) or self.timeout_s <= 0:
            raise self._error("timeout_s", "must be a positive number of seconds")
        self.auth = config.get("auth")
        if self.auth is not None:
            _check_auth(self.auth, lambda field, why: self._error(field, why))
        self.description = ""  # the manifest's description_for_model, else the document's info.description
        self.title = name
        self._token: str | None = None
        self._specs: list[ToolSpec] = []
        self._ops: dict[str, Operation] = {}
        self._client: httpx.AsyncClient | None = None

    def _error(self, field: str, why: str) -> UsageError:
        return UsageError(f"OpenAPI plugin {self.name!r}: {field}: {why}", param=field)

    def _base(self, url: str, field: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._error(field, f"{url!r} is not an http(s) URL")
        if parts.query or parts.fragment:
            raise self._error(field, f"{url!r}: a base URL takes no query or fragment")
        return url.rstrip("/")

    # --- start: read the manifest and the document, one tool per operation

    async def start(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True,
                                     max_redirects=MAX_REDIRECTS) as client:
            location = self.location
            if self.kind == "manifest":
                manifest, where = await self._read(client, location, "manifest")
                location = self._manifest(manifest, where)
            doc, where = await self._read(client, location, "openapi")
        version = str(doc.get("openapi", doc.get("swagger", "")))
        if not version.startswith("3."):
            raise self._error("openapi", f"{location}: OpenAPI 3.0 or 3.1 is supported, this is "
                                         f"{version or 'no'} version")
        info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
        if not self.description and isinstance(info.get("description"), str):
            self.description = info["description"].strip()
        if self.title == self.name and isinstance(info.get("title"), str):
            self.title = info["title"]
        if self.base_url is None:
            self.base_url = self._server_url(doc, where)
        self._token = self._resolve_token()
        note = ""
        if self.description:
            cut = self.description[:PLUGIN_NOTE] + ("..." if len(self.description) > PLUGIN_NOTE else "")
            note = f"[{self.title}: {cut}]"
        specs, ops = operations(doc, f"openapi:{self.name}", note, lambda why: self._error("openapi", why))
        if not specs:
            raise self._error("openapi", f"{location}: the document has no operations")
        self._specs, self._ops = specs, ops
        if self._client is not None:
            await self._client.aclose()
        self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True, max_redirects=MAX_REDIRECTS,
                                         event_hooks={"request": [self._check_target]})
        log.info("OpenAPI plugin %s: %d tools at %s", self.name, len(specs), self.base_url)

    async def _read(self, client: httpx.AsyncClient, location: str, field: str) -> tuple[dict, str]:
        """The parsed document at a path or URL, and where it was found (its final URL after redirects)."""
        if _is_url(location):
            try:
                accept = {"Accept": "application/json, application/yaml"}
                async with client.stream("GET", location, headers=accept) as r:
                    if r.status_code >= 400:
                        raise self._error(field, f"{location}: HTTP {r.status_code} {r.reason_phrase}")
                    data = bytearray()
                    async for chunk in r.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_DOCUMENT_BYTES:
                            raise self._error(field, f"{location}: larger than {MAX_DOCUMENT_BYTES} bytes")
                    where = str(r.url)
            except httpx.HTTPError as e:
                raise self._error(field, f"cannot fetch {location}: {type(e).__name__}: {e}") from e
        else:
            path = Path(location).expanduser()
            try:
                if path.stat().st_size > MAX_DOCUMENT_BYTES:
                    raise self._error(field, f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes")
                data = path.read_bytes()
            except OSError as e:
                raise self._error(field, f"cannot read {path}: {e.strerror or e}") from e
            where = str(path.resolve())
        try:
            text = bytes(data).decode("utf-8-sig")
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                doc = yaml.safe_load(text)
        except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
            raise self._error(field, f"{location} is neither JSON nor YAML: {e}") from e
        if not isinstance(doc, dict):
            raise self._error(field, f"{location} is not a JSON/YAML object")
        return doc, where

    def _manifest(self, manifest: dict, where: str) -> str:
        """Checks an ai-plugin.json manifest; returns where its OpenAPI document is."""
        api = manifest.get("api")
        if not isinstance(api, dict) or api.get("type") != "openapi" or not isinstance(api.get("url"), str):
            raise self._error("manifest", f"{where}: `api` must be {{\"type\": \"openapi\", \"url\": ...}}")
        auth = manifest.get("auth") if isinstance(manifest.get("auth"), dict) else {"type": "none"}
        kind = auth.get("type", "none")
        if self.auth is None and kind != "none":
            how = auth.get("authorization_type")
            if kind in ("service_http", "user_http") and how == "bearer":
                raise self._error("auth", f"the manifest asks for bearer authentication ({kind}); set "
                                          '"auth": {"type": "bearer", "token_env": "ENV_NAME"} (or "token")')
            raise self._error("auth", f"the manifest's authentication ({kind}, {how}) is not supported; only "
                                      'bearer tokens are (or set "auth": {"type": "none"} to call without)')
        for key in ("description_for_model", "description_for_human"):
            if isinstance(manifest.get(key), str) and manifest[key].strip():
                self.description = manifest[key].strip()
                break
        for key in ("name_for_human", "name_for_model"):
            if isinstance(manifest.get(key), str) and manifest[key].strip():
                self.title = manifest[key].strip()
                break
        url = _join(where, api["url"])
        _check_location(url, lambda why: self._error("manifest", f"api.url: {why}"))
        return url

    def _server_url(self, doc: dict, where: str) -> str:
        """servers[0].url with its variables' defaults; relative URLs resolve against the document's URL."""
        servers = doc.get("servers")
        server = servers[0] if isinstance(servers, list) and servers and isinstance(servers[0], dict) else {}
        url = server.get("url", "/")
        if not isinstance(url, str):
            raise self._error("openapi", "servers[0].url must be a string")
        for var, spec in (server.get("variables") or {}).items():
            if isinstance(spec, dict) and "default" in spec:
                url = url.replace("{" + var + "}", str(spec["default"]))
        if not urlsplit(url).scheme:
            if not _is_url(where):
                raise self._error("base_url", f"the document's server URL {url!r} is relative and the document is a "
                                              "file: set base_url")
            url = urljoin(where, url)
        return self._base(url, "servers[0].url")

    def _resolve_token(self) -> str | None:
        if not self.auth or self.auth["type"] == "none":
            return None
        if "token" in self.auth:
            return self.auth["token"]
        token = os.environ.get(self.auth["token_env"], "")
        if not token:
            raise self._error("auth", f"the environment variable {self.auth['token_env']} (token_env) is not set")
        return token

    async def list_tools(self) -> list[ToolSpec]:
        return list(self._specs)

    # --- call: one request to the plugin's own base URL

    async def call(self, name: str, arguments: dict, context: CallContext) -> ToolOutput:
        op = self._ops.get(name)
        if op is None or self._client is None:
            raise ToolError(f"OpenAPI plugin {self.name} has no operation {name!r}"
                            + ("" if self._client else " (it is not started)"))
        path, query, headers = op.path, [], {}
        for p in op.params:
            if p.where == "path":
                if arguments.get(p.arg) is None:
                    raise ToolError(f"the path parameter {p.arg!r} is required")
                path = path.replace("{" + p.name + "}", _segment(p.arg, arguments[p.arg]))
            elif p.arg in arguments and arguments[p.arg] is not None:
                value = arguments[p.arg]
                if p.where == "query":
                    values = value if isinstance(value, list) else [value]
                    query += [(p.name, _text(v)) for v in values]
                else:
                    text = _text(value)
                    if any(c in text for c in "\r\n\0"):
                        raise ToolError(f"the header parameter {p.arg!r} may not contain line breaks")
                    headers[p.name] = text
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        body = None
        if op.body == "arg" and op.body_keys[0] in arguments:
            body = arguments[op.body_keys[0]]
        elif op.body == "merged" and (op.body_required or any(k in arguments for k in op.body_keys)):
            body = {k: arguments[k] for k in op.body_keys if k in arguments}
        url = self.base_url + path
        request = {"params": query, "headers": headers} | ({} if body is None else {"json": body})
        try:
            async with self._client.stream(op.method.upper(), url, **request) as r:
                data, cut = bytearray(), False
                async for chunk in r.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_RESPONSE_BYTES:
                        cut = True
                        break
                status, reason = r.status_code, r.reason_phrase
                text = bytes(data[:MAX_RESPONSE_BYTES]).decode(r.encoding or "utf-8", errors="replace")
                is_json = "json" in r.headers.get("content-type", "")
        except _OutsideBase as e:
            return ToolOutput(f"error: refused to send a request to {e} (a redirect): it is outside the plugin's "
                              f"base URL {self.base_url}", is_error=True)
        except httpx.HTTPError as e:
            return ToolOutput(f"error: {op.method.upper()} {url} failed: {type(e).__name__}: {e}", is_error=True)
        if is_json and not cut and text.strip():
            try:
                text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            except (json.JSONDecodeError, RecursionError):
                pass  # not JSON after all: the text as it came
        if cut:
            text += f"\n[response cut at {MAX_RESPONSE_BYTES} bytes]"
        if status >= 400:
            return ToolOutput(f"HTTP {status} {reason}" + (f"\n{text}" if text else ""), is_error=True,
                              data={"status": status})
        return ToolOutput(text or f"HTTP {status} {reason} (no content)", data={"status": status})

    async def _check_target(self, request: httpx.Request) -> None:
        """Every request, redirects included, goes to the base URL's scheme, host, port and path."""
        base = httpx.URL(self.base_url)
        prefix = base.raw_path.split(b"?")[0].rstrip(b"/")
        url = request.url
        path = url.raw_path.split(b"?")[0]
        if ((url.scheme, url.host, url.port) != (base.scheme, base.host, base.port)
                or not (path == prefix or path.startswith(prefix + b"/"))):
            raise _OutsideBase(str(url))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class _OutsideBase(httpx.HTTPError):
    """A request (a redirect) that would leave the plugin's base URL."""


def _segment(arg: str, value: Any) -> str:
    """A path value as exactly one path segment: `/`, `?`, `#`, `%` encoded, and `.`/`..` too (a client
    would otherwise resolve them away and reach another path)."""
    text = _text(value)
    if not text:
        raise ToolError(f"the path parameter {arg!r} may not be empty")
    segment = quote(text, safe="")
    return segment.replace(".", "%2E") if set(segment) == {"."} else segment


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _is_url(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https")


def _check_location(location: str, error) -> None:
    scheme = urlsplit(location).scheme
    if scheme and len(scheme) > 1 and scheme not in ("http", "https"):  # one letter: a Windows drive
        raise error(f"{location!r}: only http(s) URLs and file paths are read")


def _join(base: str, ref: str) -> str:
    """`ref` (a manifest's api.url) relative to where the manifest was found."""
    if urlsplit(ref).scheme or _is_url(base):
        return urljoin(base, ref)
    return str(Path(base).parent / ref)


def _check_auth(auth: Any, error) -> None:
    if not isinstance(auth, dict) or auth.get("type") not in ("none", "bearer"):
        raise error("auth", 'must be {"type": "none"} or {"type": "bearer", "token": ...} / "token_env"')
    extra = set(auth) - ({"type"} if auth["type"] == "none" else {"type", "token", "token_env"})
    if extra:
        raise error("auth", f"unknown key {sorted(extra)[0]!r}")
    if auth["type"] == "bearer":
        if ("token" in auth) == ("token_env" in auth):
            raise error("auth", "a bearer token needs exactly one of `token` and `token_env`")
        key = "token" if "token" in auth else "token_env"
        if not isinstance(auth[key], str) or not auth[key].strip():
            raise error(f"auth.{key}", "must be a non-empty string")
