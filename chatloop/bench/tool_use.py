"""`chatloop bench tool-use`: tool-use accuracy of a model on the held-out set, through the real loop.

    python -m chatloop.bench.tool_use --model qwen-tools [--json]
    python -m chatloop.bench.tool_use --model qwen-tools --prompt "小明有5个苹果，吃了2个，又买了4个，现在有几个？"

The 60 held-out prompts of `chatloop.data.tool_synthetic.heldout()` (15 each: arithmetic, time in a
city, a question about "my document", no tool needed; EN and 中文; each with its own subset of the
three built-in tools offered) are run through our engine (float32, greedy) as the chat loop runs
them: the prompt is rendered with the offered tools in the model's own format, every call the model
makes is executed for real (the built-in calculator and clock of chatloop/tools/builtin.py; a
document search over a fixed corpus, `tool_pools.HELDOUT_CORPUS`, answered in search_documents'
format), the result is fed back, and the model answers again, for at most three rounds. A call of a tool that was not offered ends the conversation, as it
would in the server (whose parser knows only the offered tools).

Figures, each a rate with n and a 95% bootstrap interval (chatloop/evals/stats.py):
- right_tool: exactly the needed tool was called (all calls), or none when none is needed;
- valid_args: right tool, and every call's arguments valid under its JSON schema (jsonschema);
- right_args: the expression's value / the IANA zone is the expected one (tool prompts);
- correct_answer: the final answer holds the expected number, the clock time in the named zone, the
  document's fact, or for no-tool prompts an answer (with the expected word, where there is one);
- false_call: a no-tool prompt got a call anyway;
- not_offered: any call of a tool that was not offered (all prompts).
"""

import argparse
import asyncio
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from zoneinfo import ZoneInfo

from chatloop.data.tool_pools import HELDOUT_CORPUS
from chatloop.data.tool_synthetic import TOOLS, heldout, snippets
from chatloop.evals.stats import bootstrap, rounded, rounded_ci
from chatloop.tools.builtin import Builtins
from chatloop.tools.calculator import CalculatorError, calculate

ROUNDS = 3
METRICS = ("right_tool", "valid_args", "right_args", "correct_answer", "false_call", "not_offered")
STRAY = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


# --- the tools, for real -------------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    """Lowercased words, plus character pairs of Chinese text (which has no spaces)."""
    out = set(re.findall(r"[a-z0-9]+", text.lower()))
    for run in re.findall(r"[\u4e00-\u9fff]+", text):
        out.update(run[i:i + 2] for i in range(max(1, len(run) - 1)))
    return out


def search(query: str, top_k: int = 3) -> str:
    """The corpus's best passages for `query` by shared words, as numbered snippets."""
    want = _words(query)
    scored = sorted(((len(want & _words(name + " " + text)), i) for i, (name, text) in enumerate(HELDOUT_CORPUS)),
                    key=lambda s: (-s[0], s[1]))
    hits = [HELDOUT_CORPUS[i] for score, i in scored[:top_k] if score > 0]
    return snippets(hits) if hits else "No passages match the query."


def execute(builtins, name: str, args: dict) -> tuple[str, datetime | None]:
    """(what the model reads, the moment a clock was read) for one call: the calculator and the clock
    are the built-in tools themselves; arguments are checked against the schema first, as the
    toolbox does, and every failure is an error result."""
    import jsonschema

    from chatloop.tools.base import CallContext, ToolError

    if name not in TOOLS:
        return f"error: there is no tool named {name!r}", None
    try:
        jsonschema.validate(args, TOOLS[name]["function"]["parameters"])
    except jsonschema.ValidationError as e:
        return f"error: invalid arguments for {name}: {e.message}", None
    if name == "search_documents":
        return search(args["query"], args.get("top_k", 3)), None
    try:
        out = asyncio.run(builtins.call(name, args, CallContext()))
    except ToolError as e:
        return f"error: {e}", None
    return out.text, datetime.fromisoformat(out.data["datetime"]) if name == "current_time" else None


def _valid(name: str, args) -> bool:
    import jsonschema

    try:
        jsonschema.validate(args, TOOLS[name]["function"]["parameters"])
    except jsonschema.ValidationError:
        return False
    return True


def stray_calls(content: str) -> list[str]:
    """Names of calls left in the content ("?" where unreadable): tagged calls the parser did not
    take, and an answer that is a bare or fenced JSON call of a tool nobody offered (`multiply`)."""
    names = []
    for body in STRAY.findall(content):
        try:
            payload = json.loads(body.strip())
        except json.JSONDecodeError:
            names.append("?")
            continue
        names.append(payload.get("name", "?") if isinstance(payload, dict) else "?")
    text = content.strip()
    if text.startswith("```"):
        text = text.partition("\n")[2].strip()
    if text.startswith("{") and '"name"' in text[:100]:
        try:
            payload, _ = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError:
            payload = None
        names.append(payload["name"] if isinstance(payload, dict) and isinstance(payload.get("name"), str) else "?")
    return names


# --- one conversation -------------------------------------------------------------------------------------


def converse(engine, builtins, item: dict, max_tokens: int) -> dict:
    """Run one held-out prompt through the tool loop; the transcript with its calls and final answer."""
    from chatloop.engine.sampling import SamplingParams
    from chatloop.models.chat_format import render_prompt
    from chatloop.models.tool_calls import ToolParser, split_answer, tool_format

    fmt = tool_format(engine.tokenizer)
    offered = {t["function"]["name"] for t in item["tools"]}
    messages = [{"role": "user", "content": item["prompt"]}]
    calls, final, times = [], "", []
    for _ in range(ROUNDS):
        ids = render_prompt(engine.tokenizer, messages, tools=item["tools"]).ids
        result = engine.generate(ids, SamplingParams(temperature=0, max_tokens=max_tokens))
        content, made = split_answer(ToolParser(fmt, TOOLS), result.text)
        stray = stray_calls(content)
        calls += [{"name": c.name, "arguments": json.loads(c.arguments)} for c in made]
        calls += [{"name": name, "arguments": None} for name in stray]
        if not made or stray or any(c.name not in offered for c in made):
            final = content
            break
        messages.append({"role": "assistant", "content": content, "tool_calls": [c.as_openai() for c in made]})
        for c in made:
            text, moment = execute(builtins, c.name, json.loads(c.arguments))
            times += [moment] if moment else []
            messages.append({"role": "tool", "tool_call_id": c.id, "content": text})
    return {"id": item["id"], "calls": calls, "final": final, "offered": sorted(offered), "times": times}


def _clock(zone: str, moments: list[datetime]) -> set[str]:
    """The ways an answer may write the time in `zone` at any of `moments` (or a minute later)."""
    out = set()
    for m in moments:
        for t in (m, m + timedelta(minutes=1)):
            local = t.astimezone(ZoneInfo(zone))
            h12 = local.hour % 12 or 12
            out |= {f"{local:%H:%M}", f"{local.hour}:{local:%M}", f"{h12}:{local:%M}"}
    return out


def score(item: dict, run: dict) -> dict:
    """The metrics of one conversation (1/0; None where a metric does not apply)."""
    names = [c["name"] for c in run["calls"]]
    need = item["tool"]
    right = set(names) == {need} if need else not names
    valid = right and all(c["arguments"] is not None and _valid(c["name"], c["arguments"]) for c in run["calls"])
    final = run["final"]
    flat = re.sub(r"(?<=\d)[,\s](?=\d{3})", "", final)
    if item["kind"] == "time":
        expect = _clock(item["args"]["timezone"], run["times"]) if run["times"] else set()
    else:
        expect = set(item["expect"])
    if item["kind"] == "none" and not expect:  # any direct answer will do
        correct = bool(final.strip()) and not names
    else:
        correct = any(e in final or e in flat for e in expect)
    args_ok = None
    if need == "calculator" and valid:
        try:
            args_ok = all(calculate(c["arguments"]["expression"]) == item["args"]["value"] for c in run["calls"])
        except CalculatorError:
            args_ok = False
    elif need == "current_time" and valid:
        args_ok = all(c["arguments"].get("timezone") == item["args"]["timezone"] for c in run["calls"])
    elif need == "search_documents" and valid:
        args_ok = all(bool(c["arguments"]["query"].strip()) for c in run["calls"])
    elif need:
        args_ok = False
    return {"right_tool": right, "valid_args": valid if need else None, "right_args": args_ok,
            "correct_answer": correct, "false_call": bool(names) if not need else None,
            "not_offered": any(n not in run["offered"] for n in names)}


def summarize(items: list[dict], scores: list[dict]) -> dict:
    """Each metric's rate, n and 95% interval, overall and per kind."""
    def figure(rows: list[dict], metric: str) -> dict:
        values = [float(s[metric]) for s in rows if s[metric] is not None]
        rate, ci = bootstrap({"all": values})
        return {"rate": rounded(rate, 3), "ci": rounded_ci(ci, 3), "n": len(values)}

    kinds = sorted({i["kind"] for i in items})
    return {
        "metrics": {m: figure(scores, m) for m in METRICS},
        "by_kind": {k: {m: figure([s for i, s in zip(items, scores) if i["kind"] == k], m)
                        for m in ("right_tool", "correct_answer")} for k in kinds},
    }


def subset(items: list[dict], per_kind: int | None) -> list[dict]:
    """The first `per_kind` prompts of each kind (EN and 中文 alternate within a kind)."""
    return items if per_kind is None else [i for i in items if int(i["id"].rsplit("-", 1)[1]) < per_kind]


def run_tool_use(model: str = "default", max_tokens: int = 160, concurrency: int = 8,
                 items: list[dict] | None = None) -> dict:
    """Run the held-out set (or `items`) on `model` (a REF) and score it."""
    from chatloop.engine.scheduler import Engine

    items = items if items is not None else heldout()
    from chatloop.registry.resolve import resolve_ref

    engine = Engine.start(resolve_ref(model), "float32", max_batch=concurrency)
    started = time.perf_counter()
    done = [0]
    scratch = TemporaryDirectory()
    builtins = Builtins(scratch_root=Path(scratch.name), enabled={"calculator", "current_time"})

    def one(item: dict) -> dict:
        out = converse(engine, builtins, item, max_tokens)
        done[0] += 1
        print(f"bench tool-use: {done[0]}/{len(items)} conversations", file=sys.stderr, flush=True)
        return out

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            runs = list(pool.map(one, items))
    finally:
        engine.shutdown()
        scratch.cleanup()
    scores = [score(i, r) for i, r in zip(items, runs)]
    transcripts = [{"id": r["id"], "calls": r["calls"], "final": r["final"][:300],
                    "times": [t.isoformat() for t in r["times"]], **s}
                   for r, s in zip(runs, scores)]
    return {"model": model, "model_id": engine.model_id, "dtype": "float32", "temperature": 0, "n": len(items),
            "seconds": round(time.perf_counter() - started, 1), **summarize(items, scores), "items": transcripts}


def ask(model: str, prompt: str, tools: list[str], max_tokens: int = 160) -> dict:
    """One prompt through the loop with `tools` offered: its calls and final answer."""
    from chatloop.engine.scheduler import Engine

    from chatloop.registry.resolve import resolve_ref

    engine = Engine.start(resolve_ref(model), "float32", max_batch=1)
    try:
        with TemporaryDirectory() as scratch:
            builtins = Builtins(scratch_root=Path(scratch), enabled={"calculator", "current_time"})
            item = {"id": "prompt", "prompt": prompt, "tools": [TOOLS[t] for t in tools]}
            run = converse(engine, builtins, item, max_tokens)
    finally:
        engine.shutdown()
    return {"calls": run["calls"], "final": run["final"]}


def _table(report: dict) -> str:
    lines = [f"{report['model']} ({report['model_id']}): {report['n']} held-out prompts, {report['seconds']} s"]
    for name, f in report["metrics"].items():
        lines.append(f"  {name:15s} {f['rate']:.3f}  [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]  n={f['n']}")
    for kind, figures in report["by_kind"].items():
        lines.append(f"  {kind:7s} right_tool {figures['right_tool']['rate']:.3f}  "
                     f"correct_answer {figures['correct_answer']['rate']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tool-use accuracy on the held-out set, through the tool loop.")
    parser.add_argument("--model", default="default", help="model REF (registered name, runs:NAME, directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (with every transcript)")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--per-kind", type=int, help="only the first N prompts of each kind (a quicker, smaller run)")
    parser.add_argument("--prompt", help="ask this one prompt instead of the held-out set")
    parser.add_argument("--tools", default="calculator", help="with --prompt: offered tools, comma-separated")
    args = parser.parse_args(argv)
    if args.prompt:
        tools = [t.strip() for t in args.tools.split(",") if t.strip()]
        unknown = [t for t in tools if t not in TOOLS]
        if unknown:
            parser.error(f"unknown tool(s) {', '.join(unknown)}: choose from {', '.join(TOOLS)}")
        print(json.dumps(ask(args.model, args.prompt, tools, args.max_tokens), ensure_ascii=False))
        return
    report = run_tool_use(args.model, args.max_tokens, items=subset(heldout(), args.per_kind))
    print(json.dumps(report, ensure_ascii=False) if args.json else _table(report))


if __name__ == "__main__":
    sys.exit(main())
