"""`chatloop bench serve`: streaming chats through HTTP with the official `openai` client.

    chatloop bench serve --json

Starts `chatloop serve` (default model, `auto` dtype) on a free port with a throw-away database,
then measures 1 and 8 concurrent streaming chats in one run: aggregate completion tokens/s (from
the usage the server reports), time to first token (p50), errors, and the ratio 8 vs 1; then the
prefix cache (bench/prefix.py): TTFT on the 1st and the 10th turn of a chat (medians of 3 chats), and of the first and
the second request of the Open WebUI shape (36 tool schemas, then a short question). When
`llama_cpp` (with its server extras) is importable and the model is a GGUF, llama-cpp-python's own
OpenAI server is then started on the same file and measured the same way (`llama_cpp_server`), one
server at a time so they never share the cores.
"""

import asyncio
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chatloop.bench import prefix
from chatloop.bench.decode import PROMPTS, source_gguf


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float) -> None:
    """Until a server's /healthz says ok (or `timeout` seconds)."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).json()["status"] == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the server at {url} did not become healthy within {timeout:.0f} s")


def _cli(*args: str, env: dict, stdin: str | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "chatloop", *args], input=stdin, capture_output=True, text=True,
                          env=env, check=True)
    return proc.stdout.strip()


async def _one_chat(client, prompt: str, tokens: int, model: str = "default") -> dict:
    """One streamed chat: time to its first content and its completion tokens (from the final usage
    chunk; a server that sends none, as llama-cpp-python's, streams one token per chunk: they are counted)."""
    start = time.perf_counter()
    first = None
    usage = None
    pieces = 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0.7,
        seed=1, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if first is None:
                first = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage
    return {"ttft": (first or time.perf_counter()) - start, "tokens": usage.completion_tokens if usage else pieces}


async def _round(client, k: int, tokens: int, model: str = "default") -> dict:
    start = time.perf_counter()
    results = await asyncio.gather(*(_one_chat(client, PROMPTS[i % len(PROMPTS)], tokens, model) for i in range(k)),
                                   return_exceptions=True)
    wall = time.perf_counter() - start
    ok = [r for r in results if isinstance(r, dict)]
    return {"tok_s": sum(r["tokens"] for r in ok) / wall, "ttft_p50_ms": statistics.median(r["ttft"] for r in ok)
            * 1000 if ok else None, "errors": len(results) - len(ok)}


def _llama_cpp_server(gguf: str | None, tokens: int) -> dict | None:
    """llama-cpp-python's OpenAI server on `gguf`: 1 and 8 streaming chats, as for chatloop."""
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        return None
    import httpx
    import openai

    port = _free_port()
    # Its log goes to a file: llama.cpp logs every graph tensor at start, which fills a pipe nobody reads
    # yet, and the server then blocks before it listens.
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--port", str(port),
                               "--n_threads", str(os.cpu_count()), "--n_ctx", "4096"],
                              stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            try:
                name = httpx.get(url + "/models", timeout=1).json()["data"][0]["id"]
                break
            except (httpx.HTTPError, KeyError, IndexError, ValueError):
                if server.poll() is not None or time.time() > deadline:
                    server.kill()
                    server.wait()
                    log.seek(0)
                    lines = log.read().strip().splitlines()
                    return {"error": lines[-1] if lines else "llama-cpp-python's server did not start"}
                time.sleep(0.5)
        client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)

        async def main():
            await _one_chat(client, "Hi", 8, name)  # warm-up
            return {str(k): await _round(client, k, tokens, name) for k in (1, 8)}

        rounds = asyncio.run(main())
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    return {"aggregate_tok_s": {k: round(v["tok_s"], 2) for k, v in rounds.items()},
            "ttft_ms_p50": {k: round(v["ttft_p50_ms"], 1) for k, v in rounds.items() if v["ttft_p50_ms"] is not None},
            "errors": sum(v["errors"] for v in rounds.values())}


def run_serve_bench(model: str = "default", tokens: int = 128) -> dict:
    import openai

    from chatloop.registry.resolve import resolve_ref

    src = resolve_ref(model)  # in this user's registry: the benchmark's server has a database of its own
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CHATLOOP_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        _cli("users", "create", "bench@example.com", "--password-stdin", env=env, stdin="bench-password\n")
        key = _cli("keys", "create", "bench@example.com", env=env)
        port = _free_port()
        command = [sys.executable, "-m", "chatloop", "serve", "--port", str(port), "--model", str(src.path)]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, 180)
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)

            async def main():
                await _one_chat(client, "Hi", 8)  # warm-up
                return {str(k): await _round(client, k, tokens) for k in (1, 8)}, await prefix.run(client)

            rounds, cached = asyncio.run(main())
        finally:
            server.terminate()
            server.wait(30)
    llama = _llama_cpp_server(source_gguf(src), tokens)
    ratios = {"aggregate_8_vs_1": round(rounds["8"]["tok_s"] / rounds["1"]["tok_s"], 2)}
    if llama and "aggregate_tok_s" in llama and llama["aggregate_tok_s"]["8"]:
        ratios["aggregate_8_vs_llama_cpp_server_8"] = round(rounds["8"]["tok_s"] / llama["aggregate_tok_s"]["8"], 2)
    return {
        "model": model,
        "tokens_per_stream": tokens,
        "aggregate_tok_s": {k: round(v["tok_s"], 2) for k, v in rounds.items()},
        "ttft_ms_p50": {k: round(v["ttft_p50_ms"], 1) for k, v in rounds.items() if v["ttft_p50_ms"] is not None},
        "errors": sum(v["errors"] for v in rounds.values()),
        "llama_cpp_server": llama,
        "ratios": ratios,
        **cached,
    }


if __name__ == "__main__":
    print(json.dumps(run_serve_bench()))
