"""Synthetic tool-use conversations (EN/中文) for the three built-in tools, and a held-out set.

    python -m chatloop.data.tool_synthetic train 1200 out.jsonl [--seed 0]
    python -m chatloop.data.tool_synthetic heldout out.jsonl
    materialize("synthetic:tools:1200:mix:0", Path("run/data"))   # a stage config's data entry

A training row is `{"tools": [OpenAI function definitions], "messages": [...]}`: one to four
questions in one language, each followed either by a call (`tool_calls`, arguments as JSON text),
the tool's real result (a `tool` message written as the built-in tool writes it: the calculator's
exact value, the time in the named zone, numbered snippets) and a final answer that states it
(citing `[n]` for documents), or by a direct answer. Kinds: arithmetic (word problems and bare
expressions) -> `calculator`; the time in a city -> `current_time` with its IANA zone; questions
about "my document" -> `search_documents`; questions that need no tool (greetings, knowledge,
writing, translation). The tools are the server's own specs (chatloop/tools/builtin.py,
retrieval.py); which of them are offered varies (one to all three), and a tool that is not offered
is never called: when the needed one is missing the answer is direct (arithmetic) or says it cannot.

The held-out set (`heldout()`, 60 prompts, 15 per kind, half in Chinese) is drawn from template,
name, object and city pools disjoint from training, with its own seed; it is what
`chatloop.bench.tool_use` measures. Same arguments, same rows.
"""

import argparse
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

from chatloop.data import tool_pools as P
from chatloop.errors import UsageError
from chatloop.fsutil import atomic_write_text
from chatloop.tools.calculator import calculate, evaluate

def _builtin_tools() -> dict[str, dict]:
    """The three tools as the server offers them (their specs live with their code)."""
    from chatloop.tools.builtin import CALCULATOR, CURRENT_TIME
    from chatloop.tools.retrieval import SPEC as SEARCH_DOCUMENTS

    return {spec.name: spec.openai() for spec in (CALCULATOR, CURRENT_TIME, SEARCH_DOCUMENTS)}


TOOLS = _builtin_tools()
NEEDS = {"calc": "calculator", "time": "current_time", "search": "search_documents", "none": None}
BROWSER_PROMPT = "小明有5个苹果，吃了2个，又买了4个，现在有几个？"  # the browser test's: never in either set


# --- the tools' real results (as the built-in tools write them) --------------------------------------


def time_result(zone: str, when: datetime) -> str:
    """What `current_time` answers for `zone` at `when` (chatloop/tools/builtin.py's format)."""
    local = when.astimezone(ZoneInfo(zone))
    return f"{local.isoformat(timespec='seconds')} ({local:%A}, {zone}, UTC{local:%z})"


def snippets(hits: list[tuple[str, str]]) -> str:
    """What `search_documents` answers with these (file name, passage) hits, best first."""
    from chatloop.tools.retrieval import Hit, snippets

    return snippets([Hit(document_id=f"doc{i}", filename=name, chunk_index=0, score=1.0, text=text)
                     for i, (name, text) in enumerate(hits)])


# --- one conversation ------------------------------------------------------------------------------


def _call(name: str, arguments: dict) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "type": "function", "function": {
        "name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}]}


def _tool(content: str) -> dict:
    return {"role": "tool", "tool_call_id": "call_0", "content": content}


def _offer(r: random.Random, need: str | None, absent: bool = False) -> list[dict]:
    """Offered tools, shuffled: the needed one (unless `absent`) and each other one half the time."""
    names = [n for n in TOOLS if n != need and r.random() < 0.5]
    if need and not absent:
        names.append(need)
    if not names:
        names = [r.choice([n for n in TOOLS if n != need])]
    r.shuffle(names)
    return [TOOLS[n] for n in names]


def _num(r: random.Random, lo: int, hi: int, decimals: bool) -> str:
    if decimals and r.random() < 0.2:
        return f"{r.randint(lo, hi)}.{r.choice([5, 25, 75, 2, 8])}"
    return str(r.randint(lo, hi))


def _bare(r: random.Random, pool: P.Pool) -> str:
    """A bare expression whose value is non-negative (and whole, for a `whole` pool)."""
    while True:
        shape = r.choice(pool.shapes)
        expression = shape.format(*(_num(r, 2, 999 if i == 0 else 99, not pool.whole)
                                    for i in range(shape.count("{}"))))
        value = Fraction(evaluate(expression))
        if value >= 0 and value.denominator <= (1 if pool.whole else 1000) and abs(value) < 10**12:
            return expression


def calc_item(r: random.Random, pool: P.Pool, lang: str) -> dict:
    """An arithmetic question: {prompt, expression, value, answer sentence}."""
    if r.random() < 0.3:
        expression = _bare(r, pool)
        value = calculate(expression)
        ask, say = r.choice(pool.bare[lang])
        return {"prompt": ask.format(e=expression), "expression": expression, "value": value,
                "answer": say.format(e=expression, v=value)}
    template = r.choice(pool.word[lang])
    obj, measure = r.choice(pool.objects[lang])
    a, b, c = r.randint(2, 40), r.randint(2, 20), r.randint(2, 30)
    if "/" in template["expr"]:
        a = b * r.randint(2, 12)
    if "-" in template["expr"]:
        a = max(a, b + c + r.randint(1, 30))
    slots = {"name": r.choice(pool.names[lang]), "obj": obj, "m": measure, "a": a, "b": b, "c": c}
    expression = template["expr"].format(**slots)
    value = calculate(expression)
    return {"prompt": template["q"].format(**slots), "expression": expression, "value": value,
            "answer": template["a"].format(**slots, v=value)}


# No-tool questions are a third of all: with fewer, a tuned model learns to call a tool for everything.
KINDS, WEIGHTS = ("calc", "time", "search", "none"), (35, 16, 16, 33)


def exchange(r: random.Random, pool: P.Pool, kind: str, offered: set[str], lang: str, when: datetime) -> list[dict]:
    """One question and what follows it: a call, its result and the answer when the needed tool is
    offered; else a direct answer (arithmetic, small talk) or a "cannot" (time, documents)."""
    need = NEEDS[kind]
    if kind == "none":
        question, answer = r.choice(pool.plain[lang])
        return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    if kind == "calc":
        item = calc_item(r, pool, lang)
        user, call = item["prompt"], _call("calculator", {"expression": item["expression"]})
        result, answer = item["value"], item["answer"]
    elif kind == "time":
        user, city, zone = _time_question(r, pool, lang)
        moment = when + timedelta(minutes=r.randrange(60 * 24 * 365))
        result = time_result(zone, moment)
        local = moment.astimezone(ZoneInfo(zone))
        answer = r.choice(P.TIME_ANSWERS[lang]).format(city=city, hm=f"{local:%H:%M}", date=f"{local:%Y-%m-%d}")
        call = _call("current_time", {"timezone": zone})
    else:
        user, query, hits, fact, at = _search_question(r, pool, lang)
        call = _call("search_documents", {"query": query})
        result = snippets(hits)
        answer = r.choice(P.CITE[lang]).format(fact=fact, n=at)
    if need not in offered:
        direct = answer if kind == "calc" else r.choice(P.CANNOT[kind][lang])
        return [{"role": "user", "content": user}, {"role": "assistant", "content": direct}]
    return [{"role": "user", "content": user}, call, _tool(result), {"role": "assistant", "content": answer}]


def gen_row(r: random.Random, pool: P.Pool, when: datetime) -> dict:
    """One training conversation: a subset of the tools, then one to four exchanges in one language
    (several exchanges share the tool descriptions, which are most of a short conversation's tokens).
    The first question's tool is offered 85 times in 100; a later question whose tool is not
    offered is kept three times in ten (else another kind is drawn)."""
    lang = r.choice(("en", "zh"))
    first = r.choices(KINDS, weights=WEIGHTS)[0]
    tools = _offer(r, NEEDS[first], absent=first != "none" and r.random() < 0.15)
    offered = {t["function"]["name"] for t in tools}
    kinds = [first]
    for _ in range(r.choices((0, 1, 2, 3), weights=(15, 30, 30, 25))[0]):
        kind = r.choices(KINDS, weights=WEIGHTS)[0]
        while NEEDS[kind] and NEEDS[kind] not in offered and r.random() >= 0.3:
            kind = r.choices(KINDS, weights=WEIGHTS)[0]
        kinds.append(kind)
    system = [{"role": "system", "content": r.choice(P.SYSTEMS[lang])}] if r.random() < 0.25 else []
    return {"tools": tools, "messages": system + [m for kind in kinds for m in exchange(r, pool, kind, offered, lang,
                                                                                           when)]}


def _time_question(r: random.Random, pool: P.Pool, lang: str) -> tuple[str, str, str]:
    """(question, the place as named, its IANA zone)."""
    if r.random() < 0.1:
        return r.choice(P.TIME_NO_CITY[lang]), "UTC", "UTC"
    city_en, city_zh, zone = r.choice(pool.cities)
    city = city_en if lang == "en" else city_zh
    return r.choice(pool.time_q[lang]).format(city=city), city, zone


def _search_question(r: random.Random, pool: P.Pool, lang: str) -> tuple[str, str, list, str, int]:
    """(question, query, snippets, the fact sentence, its snippet number)."""
    topic = r.choice(pool.facts[lang])
    value = r.choice(topic["values"])
    fact = topic["fact"].format(v=value)
    files = r.sample(pool.files, 3)
    others = [t for t in pool.facts[lang] if t is not topic]
    hits = [(files[0], fact)] + [(f, (o := r.choice(others))["fact"].format(v=r.choice(o["values"])))
                                 for f in files[1:1 + r.randint(0, 2)]]
    r.shuffle(hits)
    at = next(i for i, (_, text) in enumerate(hits, 1) if text == fact)
    question = r.choice(pool.search_q[lang]).format(topic=topic["topic"])
    return question, topic["query"], hits, fact, at


# --- sets ---------------------------------------------------------------------------------------------


def generate(n: int, seed: int = 0) -> Iterator[dict]:
    """`n` training conversations; never the browser test's prompt."""
    r = random.Random(f"tools:train:{seed}")
    when = datetime(2025, 1, 1, tzinfo=ZoneInfo("UTC"))
    made = 0
    while made < n:
        row = gen_row(r, P.TRAIN, when)
        if any(m["content"] == BROWSER_PROMPT for m in row["messages"]):
            continue
        made += 1
        yield row


def heldout(seed: int = 1) -> list[dict]:
    """60 evaluation prompts, 15 per kind (calc, time, search, none), EN and 中文 alternating.
    Each: {"id", "kind", "lang", "tools", "prompt", "tool" (needed, or None), "expect": [texts one of
    which the final answer must contain], "args": what a right call's arguments hold}."""
    r = random.Random(f"tools:heldout:{seed}")
    items = []
    for k, kind in enumerate(("calc", "time", "search", "none")):
        for i in range(15):
            lang = ("en", "zh")[(i + k) % 2]
            absent = kind == "none" and i >= 10  # a needed tool that is not offered: answer directly
            item = {"id": f"{kind}-{i:02d}", "kind": kind, "lang": lang, "tool": NEEDS[kind]}
            if kind == "calc":
                c = calc_item(r, P.HELDOUT, lang)
                while c["prompt"] == BROWSER_PROMPT:
                    c = calc_item(r, P.HELDOUT, lang)
                item.update(prompt=c["prompt"], expect=[c["value"]], args={"value": c["value"]})
            elif kind == "time":
                city_en, city_zh, zone = P.HELDOUT.cities[i % len(P.HELDOUT.cities)]
                question = r.choice(P.HELDOUT.time_q[lang]).format(city=city_en if lang == "en" else city_zh)
                item.update(prompt=question, expect=[], args={"timezone": zone})
            elif kind == "search":
                doc, question, facts = P.HELDOUT_SEARCH[i]
                item.update(prompt=question, expect=facts, args={"document": doc})
            elif absent:
                question, value = P.HELDOUT_ABSENT[i - 10]
                item.update(prompt=question, expect=[value], args={}, absent=True)
            else:
                question, expect = P.HELDOUT.plain[lang][i // 2]
                item.update(prompt=question, expect=expect, args={})
            need = "calculator" if item.get("absent") else item["tool"]
            item["tools"] = _offer(r, need, absent=bool(item.get("absent")))
            items.append(item)
    return items


def write_jsonl(rows, path: Path) -> Path:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def materialize(spec: str, dest: Path) -> Path:
    """`synthetic:tools:N[:LANG[:SEED]]` -> a JSONL file in dest (written once, then reused). LANG is
    `mix` (both languages are always drawn)."""
    parts = spec.split(":")[1:]
    if len(parts) < 2 or len(parts) > 4 or parts[0] != "tools" or not parts[1].isdigit():
        raise UsageError(f"bad data spec '{spec}': expected synthetic:tools:N[:mix[:SEED]]")
    if parts[2:3] not in ([], ["mix"]):
        raise UsageError(f"bad data spec '{spec}': tool conversations are always mixed EN/中文; use mix")
    n, seed = int(parts[1]), int((parts[3:4] or ["0"])[0])
    path = dest / f"synthetic-tools-{n}-mix-{seed}.jsonl"
    if not path.is_file():
        write_jsonl(generate(n, seed), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write synthetic tool-use conversations or the held-out set.")
    sub = parser.add_subparsers(dest="what", required=True)
    train = sub.add_parser("train")
    train.add_argument("n", type=int)
    train.add_argument("out", type=Path)
    train.add_argument("--seed", type=int, default=0)
    held = sub.add_parser("heldout")
    held.add_argument("out", type=Path)
    args = parser.parse_args()
    rows = generate(args.n, args.seed) if args.what == "train" else heldout()
    print(write_jsonl(rows, args.out))


if __name__ == "__main__":
    main()
