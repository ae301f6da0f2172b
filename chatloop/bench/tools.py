"""`chatloop bench tools`: does a model call the right tool, with valid arguments, only when it should?

    chatloop bench tools --model /path/to/qwen2.5-coder-0.5b-instruct.gguf --json

Starts `chatloop serve` (the model, `float32`) on a free port with a throw-away database and asks,
through the official `openai` client, a held-out set written for this benchmark: 30 prompts that
need one of 6 tools and 15 that need none, all with the 6 tools offered (`tool_choice` auto,
greedy). Each prompt is asked twice, streamed and not. Reported, per mode: the fraction of tool
prompts answered with exactly the right tool and arguments valid under its JSON schema
(`jsonschema`), the fraction of no-tool prompts that called a tool anyway, and how often the streamed
and non-streamed answers agree (same calls, same arguments).
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from chatloop.bench.serve import _cli, _free_port, wait_healthy


def _tool(name: str, description: str, properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required or list(properties),
        "additionalProperties": False}}}


STRING = {"type": "string", "minLength": 1}
TOOLS = [
    _tool("get_weather", "Current weather in a city.", {"city": STRING}),
    _tool("get_time", "Current local time in an IANA time zone, e.g. Europe/Paris.", {"tz": STRING}),
    _tool("calculator", "Evaluate an arithmetic expression exactly.", {"expression": STRING}),
    _tool("search_web", "Search the web for recent information.", {"query": STRING}),
    _tool("send_email", "Send an email.", {"to": STRING, "subject": STRING, "body": STRING}),
    _tool("convert_currency", "Convert an amount of money between currencies (ISO codes).",
          {"amount": {"type": "number"}, "from": STRING, "to": STRING}),
]

# (prompt, the tool it needs); written for this benchmark, never used to tune anything.
TOOL_PROMPTS = [
    ("What's the weather like in Lisbon right now?", "get_weather"),
    ("Is it raining in Tokyo at the moment?", "get_weather"),
    ("Tell me the current temperature in Nairobi.", "get_weather"),
    ("Should I bring an umbrella in Vancouver today? Check the weather.", "get_weather"),
    ("How windy is it in Wellington now?", "get_weather"),
    ("What time is it in Europe/Berlin?", "get_time"),
    ("Tell me the current local time in Asia/Kolkata.", "get_time"),
    ("What's the time right now in the America/New_York time zone?", "get_time"),
    ("I need the current time in Australia/Sydney.", "get_time"),
    ("Look up the local time for time zone Africa/Cairo.", "get_time"),
    ("Compute 48213 * 977 exactly.", "calculator"),
    ("What is (1234 + 5678) / 3.5?", "calculator"),
    ("Use the calculator: 2 ** 31 - 1.", "calculator"),
    ("Calculate 17.5% of 2840.", "calculator"),
    ("What's the square of 1.0873 times 5521?", "calculator"),
    ("Search the web for the latest stable Linux kernel release.", "search_web"),
    ("Find recent news about the James Webb Space Telescope.", "search_web"),
    ("Who won yesterday's Formula 1 race? Search online.", "search_web"),
    ("Look up reviews of the newest Framework laptop on the web.", "search_web"),
    ("Search for this week's top story on Hacker News.", "search_web"),
    ("Email bob@example.com with subject 'Lunch' saying I'll be 10 minutes late.", "send_email"),
    ("Send an email to team@acme.io, subject 'Release', body 'v2 is out today'.", "send_email"),
    ("Write to alice@example.org (subject: Invoice) that the invoice is attached.", "send_email"),
    ("Please email hr@corp.com with the subject 'Vacation' and ask for Friday off.", "send_email"),
    ("Send carol@example.net an email titled 'Meeting' asking to move our call to 3pm.", "send_email"),
    ("Convert 250 US dollars to euros.", "convert_currency"),
    ("How much is 1000 JPY in GBP?", "convert_currency"),
    ("Convert 75.5 EUR to CHF.", "convert_currency"),
    ("What are 12000 Indian rupees in US dollars?", "convert_currency"),
    ("Change 300 CAD into AUD for me.", "convert_currency"),
]
NO_TOOL_PROMPTS = [
    "Write a haiku about autumn leaves.",
    "Explain what a Python list comprehension is in one sentence.",
    "What is the capital of Italy?",
    "Translate 'good morning' into Spanish.",
    "Give me a synonym for 'happy'.",
    "Write a Python function that reverses a string.",
    "What does HTTP stand for?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "Hello! How are you?",
    "What is the difference between a process and a thread?",
    "Suggest a name for a pet goldfish.",
    "Explain recursion to a child.",
    "Is a tomato a fruit or a vegetable?",
    "Write a SQL query that counts the rows of a table named users.",
    "Thank you, that was helpful!",
]


def _calls(message_calls) -> list[tuple[str, str]]:
    return [(c["name"], c["arguments"]) for c in message_calls]


async def _ask(client, prompt: str, stream: bool, max_tokens: int) -> dict:
    """One answer as {"calls": [(name, arguments JSON)], "content": str}."""
    kw = {"model": "default", "messages": [{"role": "user", "content": prompt}], "tools": TOOLS,
          "tool_choice": "auto", "temperature": 0, "seed": 0, "max_tokens": max_tokens}
    if not stream:
        r = await client.chat.completions.create(**kw)
        m = r.choices[0].message
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in m.tool_calls or []]
        return {"calls": _calls(calls), "content": m.content or "", "finish": r.choices[0].finish_reason}
    calls: dict[int, dict] = {}
    content, finish = [], None
    async for chunk in await client.chat.completions.create(**kw, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content.append(delta.content or "")
        for d in delta.tool_calls or []:
            call = calls.setdefault(d.index, {"name": "", "arguments": ""})
            call["name"] += (d.function.name or "") if d.function else ""
            call["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = chunk.choices[0].finish_reason or finish
    return {"calls": _calls([calls[k] for k in sorted(calls)]), "content": "".join(content), "finish": finish}


def _valid(name: str, arguments: str) -> bool:
    import jsonschema

    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)
    try:
        jsonschema.validate(json.loads(arguments), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


def _right(answer: dict, tool: str) -> bool:
    """Exactly one call, of `tool`, with schema-valid arguments, reported with finish `tool_calls`."""
    calls = answer["calls"]
    return (len(calls) == 1 and calls[0][0] == tool and _valid(*calls[0])
            and answer["finish"] == "tool_calls")


def _same(a: dict, b: dict) -> bool:
    return [(n, json.loads(x)) for n, x in a["calls"]] == [(n, json.loads(x)) for n, x in b["calls"]]


def score(tool_answers: dict, plain_answers: dict) -> dict:
    """The report's figures from {mode: [answer per prompt]} of the tool and no-tool prompts."""
    out: dict = {"n_tool_prompts": len(TOOL_PROMPTS), "n_no_tool_prompts": len(NO_TOOL_PROMPTS)}
    for mode in ("non_streamed", "streamed"):
        right = sum(_right(a, tool) for a, (_, tool) in zip(tool_answers[mode], TOOL_PROMPTS))
        wrong = sum(bool(a["calls"]) for a in plain_answers[mode])
        out[mode] = {"right_tool_valid_args": round(right / len(TOOL_PROMPTS), 3),
                     "called_without_need": round(wrong / len(NO_TOOL_PROMPTS), 3)}
    pairs = list(zip(tool_answers["non_streamed"] + plain_answers["non_streamed"],
                     tool_answers["streamed"] + plain_answers["streamed"]))
    out["stream_agreement"] = round(sum(_same(a, b) for a, b in pairs) / len(pairs), 3)
    return out


def run_tools_bench(model: str = "default", max_tokens: int = 96, concurrency: int = 8) -> dict:
    import openai

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CHATLOOP_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        _cli("users", "create", "bench@example.com", "--password-stdin", env=env, stdin="bench-password\n")
        key = _cli("keys", "create", "bench@example.com", env=env)
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "chatloop", "serve", "--port", str(port), "--model", model,
                                   "--dtype", "float32"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, 600)
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=1800)
            gate = asyncio.Semaphore(concurrency)

            done = [0]
            prompts = [p for p, _ in TOOL_PROMPTS] + NO_TOOL_PROMPTS
            total = 2 * len(prompts)

            async def ask(prompt: str, stream: bool) -> dict:
                async with gate:
                    answer = await _ask(client, prompt, stream, max_tokens)
                done[0] += 1
                print(f"bench tools: {done[0]}/{total} answered", file=sys.stderr, flush=True)
                return answer

            async def main():  # every request queued at once: the engine's batch stays full
                return await asyncio.gather(*(ask(p, stream) for stream in (False, True) for p in prompts))

            answers = asyncio.run(main())
            n = len(TOOL_PROMPTS)
            whole, streamed = answers[:len(prompts)], answers[len(prompts):]
            tool_answers = {"non_streamed": whole[:n], "streamed": streamed[:n]}
            plain_answers = {"non_streamed": whole[n:], "streamed": streamed[n:]}
        finally:
            server.terminate()
            server.wait(30)
    return {"model": model, "dtype": "float32", "tool_choice": "auto", "temperature": 0, "max_tokens": max_tokens,
            **score(tool_answers, plain_answers)}


if __name__ == "__main__":
    print(json.dumps(run_tools_bench(sys.argv[1] if len(sys.argv) > 1 else "default")))
