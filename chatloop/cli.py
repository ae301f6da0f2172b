"""The `chatloop` command line (Typer). Heavy imports (torch, transformers) happen inside commands
so that `chatloop --help` is instant and `generate` reaches its first token quickly.

    chatloop generate --prompt "What is the capital of France?" --temperature 0 --json
    chatloop chat
    chatloop bench decode --json

Exit codes: 0 ok, 1 runtime failure, 2 bad usage/input (one-line reason on stderr).
"""

import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from chatloop.errors import ChatloopError, UsageError

LAUNCH = time.time()  # refined from /proc when available (see _launch_time)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="chatloop: an open, full-stack ChatGPT.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print side-by-side ratios.")
app.add_typer(bench_app, name="bench")
users_app = typer.Typer(no_args_is_help=True, help="Manage accounts.")
app.add_typer(users_app, name="users")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(keys_app, name="keys")

from chatloop.data.cli import data_app  # noqa: E402  (light: heavy imports happen per command)
from chatloop.evals.cli import eval_command  # noqa: E402
from chatloop.flywheel.cli import flywheel_command  # noqa: E402
from chatloop.models.loading import DTYPES  # noqa: E402
from chatloop.registry.cli import backup_command, models_app, restore_command  # noqa: E402
from chatloop.tools.cli import tools_app  # noqa: E402
from chatloop.train.cli import train as _train  # noqa: E402

app.command("train")(_train)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(tools_app, name="tools")
app.command("eval")(eval_command)
app.command("flywheel")(flywheel_command)
app.command("backup")(backup_command)
app.command("restore")(restore_command)


DType = Enum("DType", {d.replace("-", "_"): d for d in DTYPES}, type=str)  # the choices --dtype offers


DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu or cuda (bf16, SDPA attention); default: "
                                                              "CHATLOOP_DEVICE, else cpu.")]
REF_HELP = ("Model REF: default, runs:RUN, hf:ORG/NAME[@REV], NAME:VERSION, NAME, NAME@CHANNEL, or a path to a "
            "Hugging Face model directory or .gguf file.")
ModelOpt = Annotated[str, typer.Option("--model", "-m", help=REF_HELP)]
SystemOpt = Annotated[str | None, typer.Option("--system", help="System prompt (default: the model template's).")]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Weights: auto (the fastest measured on this machine "
                                                         f"that keeps quality), {', '.join(DTYPES[1:])}.")]


def _launch_time() -> float:
    """Wall-clock time the process started (Linux /proc), else when this module was imported."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return time.time() - uptime + start_ticks / ticks
    except (OSError, ValueError, IndexError):
        return LAUNCH


def _fail(e: ChatloopError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _messages(system: str | None, prompt: str) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


@app.command()
def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The user message.")],
    model: ModelOpt = "default",
    system: SystemOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Most tokens to generate.")] = 256,
    dtype: DTypeOpt = DType.auto,
    device: DeviceOpt = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy (deterministic).")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.")] = 0.9,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of streaming.")] = False,
) -> None:
    """Answer one prompt with a chat model (streams to stdout)."""
    try:
        from chatloop.engine.sampling import SamplingParams
        from chatloop.engine.scheduler import Engine
        from chatloop.models.chat_format import render_prompt

        from chatloop.registry.resolve import resolve_ref

        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
        t0 = time.time()
        target = resolve_ref(model)
        t_resolved = time.time()
        engine = Engine.start(target, dtype.value, max_batch=1, device=device)
        t_loaded = time.time()
        rendered = render_prompt(engine.tokenizer, _messages(system, prompt), max_tokens=engine.max_len - max_tokens)
        first_token_at = None
        for event in engine.submit(rendered.ids, params):
            if first_token_at is None:
                first_token_at = time.time()
            if not as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
        result = event.result
        engine.shutdown()
    except ChatloopError as e:
        _fail(e)
    if result.finish_reason == "error":
        _fail(ChatloopError(f"generation failed: {result.error}"))
    if not as_json:
        sys.stdout.write("\n")
        return
    launch = _launch_time()
    timings = {k: round(v * 1000, 1) for k, v in engine.loaded.timings.items()}
    out = {
        "text": result.text,
        "model": result.model,
        "finish_reason": result.finish_reason,
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
        "ttft_ms": round((result.ttft_s or 0.0) * 1000, 1),
        "tok_s": round(result.decode_tok_s, 2),
        "dtype": engine.loaded.dtype,
        "startup_ms": {
            "python_start_and_imports": round((t0 - launch) * 1000, 1),
            "registry": round((t_resolved - t0) * 1000, 1),
            **{k.removesuffix("_s"): v for k, v in timings.items()},
            "engine_ready": round((t_loaded - t_resolved) * 1000, 1),
            "first_token_since_launch": round(((first_token_at or time.time()) - launch) * 1000, 1),
        },
    }
    typer.echo(json.dumps(out, ensure_ascii=False))


CHAT_HELP = "Commands: /reset (new conversation), /system TEXT (set system prompt), /exit. Ctrl-C stops an answer."


@app.command()
def chat(
    model: ModelOpt = "default",
    system: SystemOpt = None,
    dtype: DTypeOpt = DType.auto,
    device: DeviceOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Most tokens per answer.")] = 512,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.7,
) -> None:
    """Chat in the terminal: streaming answers, multi-turn memory."""
    from rich.console import Console

    console = Console(highlight=False)
    try:
        from chatloop.engine.sampling import SamplingParams
        from chatloop.engine.scheduler import Engine
        from chatloop.models.chat_format import render_prompt

        from chatloop.registry.resolve import resolve_ref

        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=0.9)
        with console.status(f"loading {model} ..."):
            engine = Engine.start(resolve_ref(model), dtype.value, max_batch=1, device=device)
    except ChatloopError as e:
        _fail(e)
    console.print(f"chatloop · {engine.model_id} ({engine.loaded.dtype}). {CHAT_HELP}", style="dim", markup=False)
    messages: list[dict] = []
    while True:
        try:
            line = console.input("[bold green]you>[/] ")
        except EOFError:
            break
        except KeyboardInterrupt:
            console.print("\n(type /exit or press Ctrl-D to quit)", style="dim")
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = []
            console.print("(new conversation)", style="dim")
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            console.print(f"(system prompt {'set' if system else 'cleared'}; applies from the next message)", style="dim")
            continue
        if text.startswith("/"):
            console.print(f"unknown command. {CHAT_HELP}", style="dim")
            continue
        messages.append({"role": "user", "content": line})
        convo = ([{"role": "system", "content": system}] if system else []) + messages
        try:
            rendered = render_prompt(engine.tokenizer, convo, max_tokens=engine.max_len - max_tokens)
        except ChatloopError as e:
            console.print(f"error: {e}", style="red", markup=False)
            messages.pop()
            continue
        if rendered.dropped:
            console.print(f"(the oldest {rendered.dropped} messages no longer fit the context and were left out)",
                          style="dim")
        handle = engine.submit(rendered.ids, params)
        console.print("[bold blue]assistant>[/] ", end="")
        try:
            for event in handle:
                console.out(event.text, end="")
        except KeyboardInterrupt:
            handle.cancel()
            result = handle.wait()
            console.print(" [stopped]", style="dim", markup=False)
        else:
            result = handle.result
            console.print()
        if result.finish_reason == "error":
            console.print(f"error: {result.error}", style="red", markup=False)
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": result.text})
    engine.shutdown()


DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (default: CHATLOOP_DATABASE_URL or "
                                                       "SQLite in CHATLOOP_HOME).")]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help=REF_HELP + " Repeat to serve several; the first is 'default'.")] = None,
    db: DbOpt = None,
    dtype: DTypeOpt = DType.auto,
    device: DeviceOpt = None,
    max_batch: Annotated[int | None, typer.Option("--max-batch", min=1, help="Sequences decoded together.")] = None,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json (one object per line).")] = "text",
    mcp_config: Annotated[Path | None, typer.Option(
        "--mcp-config", help='Tools config: {"mcpServers": {...}, "openapiPlugins": {...}} (docs/mcp.md); '
                             "their tools join the built-ins in conversations.")] = None,
    backend: Annotated[str | None, typer.Option(
        "--backend", help="openai:URL — serve the models of an OpenAI-compatible server (vLLM, llama.cpp's server, "
                          "another chatloop); --model then names its models ('default': the first it lists). "
                          "docs/remote-engines.md")] = None,
    backend_key: Annotated[str | None, typer.Option(
        "--backend-key", help="API key for --backend (or set CHATLOOP_BACKEND_KEY).")] = None,
) -> None:
    """Serve the web UI, the app API (/api) and the OpenAI-compatible API (/v1)."""
    import logging.config

    from chatloop.config import get_settings
    from chatloop.server import logs
    from chatloop.server.app import create_app, serve_app

    if log_format not in ("text", "json"):
        _fail(UsageError(f"--log-format must be text or json, not {log_format!r}"))
    log_config = logs.configure(log_format)
    logging.config.dictConfig(log_config)
    models = model or ["default"]
    overrides: dict = {"max_batch": max_batch} if max_batch else {}
    try:
        from chatloop.registry.resolve import resolve_ref
        from chatloop.store.db import Database, normalize_url

        if db:
            overrides["database_url"] = normalize_url(db)
        if mcp_config is not None:
            from chatloop.tools.config import load_tools_config

            load_tools_config(mcp_config)  # a broken file fails fast with exit code 2
            overrides["mcp_config"] = mcp_config.resolve()
        if backend:
            overrides["backend"] = backend
        if backend_key:
            overrides["backend_key"] = backend_key
        if device:
            from chatloop.engine.scheduler import check_device

            overrides["device"] = check_device(device)
        settings = get_settings().model_copy(update=overrides)
        if settings.backend:
            from chatloop.engine.remote import RemoteBackend

            remote = RemoteBackend.parse(settings.backend, settings.backend_key)
            for ref in models:
                remote.model(ref)  # an unreachable backend or one without models fails fast
        else:
            database = Database(settings.db_url)
            for ref in models:
                resolve_ref(ref, database)  # a bad reference fails fast with exit code 2
            database.dispose()
    except ChatloopError as e:
        _fail(e)
    app = create_app(settings, models=models, dtype=dtype.value)
    typer.echo(f"chatloop: serving on http://{host}:{port}  (OpenAI API at http://{host}:{port}/v1)", err=True)
    if not serve_app(app, host=host, port=port, log_config=log_config):
        raise typer.Exit(3)  # start-up failed (logged), as uvicorn.run exits


def _db(db: str | None):
    from chatloop.config import get_settings
    from chatloop.store.db import Database

    return Database(db or get_settings().db_url)


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The account's email address.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the account an administrator.")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    db: DbOpt = None,
) -> None:
    """Create an account (the first account is always an administrator)."""
    import getpass

    from chatloop.store.accounts import create_user

    password = sys.stdin.readline().rstrip("\n") if password_stdin else getpass.getpass("Password: ")
    try:
        with _db(db).session() as s:
            user = create_user(s, email, password, admin=True if admin else None)
    except ChatloopError as e:
        _fail(e)
    typer.echo(f"created {user.email}" + (" (admin)" if user.is_admin else ""))


@keys_app.command("create")
def keys_create(
    email: Annotated[str, typer.Argument(help="The account that owns the key.")],
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "cli",
    db: DbOpt = None,
) -> None:
    """Create an API key and print it (shown only this once; stored hashed)."""
    from chatloop.store.accounts import create_key, user_by_email

    try:
        with _db(db).session() as s:
            _, secret = create_key(s, user_by_email(s, email).id, name)
    except ChatloopError as e:
        _fail(e)
    typer.echo(secret)


@bench_app.command("decode")
def bench_decode(
    model: ModelOpt = "default",
    tokens: Annotated[int, typer.Option("--tokens", min=8, help="Tokens generated per stream.")] = 128,
    dtype: DTypeOpt = DType.auto,
    device: DeviceOpt = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=20, help=(
        "Rounds of each measurement (ours interleaved); each reports its fastest."))] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decode speed: transformers generate and llama.cpp vs our engine, 1/4/8 concurrent streams, the
    kernels chosen, the fraction of the memory-bandwidth roofline, startup time."""
    from chatloop.bench.decode import print_report, run_decode_bench

    _bench(lambda: run_decode_bench(model, tokens, dtype=dtype.value, device=device, rounds=rounds), as_json,
           print_report)


@bench_app.command("serve")
def bench_serve(
    model: ModelOpt = "default",
    tokens: Annotated[int, typer.Option("--tokens", min=8, help="Tokens generated per chat.")] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Serving: 1 vs 8 concurrent streaming chats through HTTP with the openai client; time to first
    token on a chat's 1st and 10th turn and on the Open WebUI shape (36 tool schemas) twice."""
    from rich.console import Console

    from chatloop.bench.serve import run_serve_bench

    _bench(lambda: run_serve_bench(model, tokens), as_json, lambda r: Console().print_json(json.dumps(r)))


@bench_app.command("load")
def bench_load(
    users: Annotated[int, typer.Option("--users", min=1, help="Virtual users acting at once.")] = 8,
    minutes: Annotated[float, typer.Option("--minutes", min=0.01, help="How long (fractions allowed: 0.5).")] = 1.0,
    model: ModelOpt = "default",
    url: Annotated[str | None, typer.Option("--url", help="Load a running server instead of starting one.")] = None,
    email: Annotated[str | None, typer.Option("--email", help="With --url: sign in to this account instead of "
                                                              "signing up users.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read --email's password from "
                                                                         "stdin.")] = False,
    pid: Annotated[int | None, typer.Option("--pid", help="With --url: the server's process id, to sample its "
                                                          "RSS.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Tokens per answer.")] = 48,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Load and soak: N users' mixed traffic through the real HTTP API for M minutes.

    Streamed chats, regenerate, feedback, /v1 with the openai client, clients that leave mid-stream;
    reports failures by status, rejections (429/503 + Retry-After), latency and TTFT percentiles,
    tokens/s and the server's RSS over time.
    """
    from chatloop.bench.load import run_load_bench
    from chatloop.bench.load_stats import print_table

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    _bench(lambda: run_load_bench(users, minutes, model=model, url=url, email=email, password=password, pid=pid,
                                  max_tokens=max_tokens), as_json, print_table)


@bench_app.command("tools")
def bench_tools(
    model: ModelOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Tool calling through HTTP (tool_choice auto, float32): right tool with schema-valid arguments
    on 30 prompts that need one, calls on 15 that need none, streamed vs not."""
    from rich.console import Console

    from chatloop.bench.tools import run_tools_bench

    _bench(lambda: run_tools_bench(model), as_json, lambda r: Console().print_json(json.dumps(r)))


@bench_app.command("tool-use")
def bench_tool_use(
    model: ModelOpt = "default",
    per_kind: Annotated[int | None, typer.Option("--per-kind", min=1, help="Only the first N prompts of each "
                                                                           "kind (a quicker, smaller run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (with every transcript).")] = False,
) -> None:
    """Tool use through the real loop (float32, greedy) on 60 held-out EN/中文 prompts: right tool,
    valid and right arguments, correct final answer, needless calls, calls of tools not offered."""
    from chatloop.bench.tool_use import _table, heldout, run_tool_use, subset

    _bench(lambda: run_tool_use(model, items=subset(heldout(), per_kind)), as_json,
           lambda r: typer.echo(_table(r)))


def _bench(run, as_json: bool, pretty) -> None:
    """Run a benchmark; print one JSON object (--json) or a human-readable report."""
    try:
        report = run()
    except ChatloopError as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        pretty(report)


@bench_app.command("flywheel")
def bench_flywheel(
    users: Annotated[int, typer.Option("--users", min=1, help="Scripted users chatting at once.")] = 8,
    turns: Annotated[int, typer.Option("--turns", min=1, help="Questions per user (each regenerated once).")] = 12,
    heldout: Annotated[int, typer.Option("--heldout", min=4, help="Held-out questions to compare on.")] = 40,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="DPO optimizer steps.")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """A flywheel turn end to end: scripted users with a hidden preference give feedback over HTTP,
    one turn trains a candidate; does it match the preference better on held-out questions?"""
    from rich.console import Console

    from chatloop.bench.flywheel import run_flywheel_bench

    _bench(lambda: run_flywheel_bench(users, turns, heldout, max_steps), as_json,
           lambda r: Console().print_json(json.dumps(r)))


@bench_app.command("train")
def bench_train(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Pretraining tokens/s and achieved FLOP/s over a measured matmul peak (~10M-param Llama)."""
    from chatloop.bench.train import print_report, run_train_bench

    _bench(run_train_bench, as_json, print_report)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
