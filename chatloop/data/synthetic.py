"""Synthetic datasets written by this project (no third-party text): corpora, conversations,
preference pairs, thumbs labels and prompts with checkable answers, in English and Chinese.

Topics: arithmetic, unit conversion, templated facts about invented places (so a tiny model can
learn them without leaking real-world claims), and polite refusals of harmful requests.

    python -m chatloop.data.synthetic sft 1000 out.jsonl [--lang en|zh|mix] [--seed 0]
    materialize("synthetic:sft:1000:mix", Path("run/data"))   # used by stage configs

Every generator is a pure function of (kind, n, lang, seed): the same spec yields the same file.
"""

import argparse
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from chatloop.errors import UsageError
from chatloop.fsutil import atomic_write_text

LANGS = ("en", "zh", "mix")

# --- invented world (facts) ---------------------------------------------------------------------

_SYL = ["ka", "lo", "mi", "ren", "to", "sha", "vel", "dor", "pi", "qua", "zen", "bri", "mo", "tal", "wu", "ne"]
_ZH_SYL = ["卡", "洛", "米", "仁", "托", "沙", "维", "多", "皮", "夸", "禅", "布", "莫", "塔", "吴", "内"]
_COLORS = [("red", "红色"), ("blue", "蓝色"), ("green", "绿色"), ("yellow", "黄色"), ("purple", "紫色")]
_FOODS = [("rice", "米饭"), ("noodles", "面条"), ("bread", "面包"), ("dumplings", "饺子"), ("soup", "汤")]


def _place(i: int) -> tuple[str, str]:
    """Deterministic invented place names, the same index giving the same name in both languages."""
    a, b, c = i % 16, (i // 16) % 16, (i // 256) % 16
    return (_SYL[a] + _SYL[b] + _SYL[c]).capitalize(), _ZH_SYL[a] + _ZH_SYL[b] + _ZH_SYL[c]


def _fact(r: random.Random) -> dict:
    i = r.randrange(4096)
    country, country_zh = _place(i)
    capital, capital_zh = _place(i * 7 + 3)
    color, color_zh = _COLORS[i % len(_COLORS)]
    food, food_zh = _FOODS[(i // 5) % len(_FOODS)]
    return {
        "en": (f"What is the capital of {country}?", f"The capital of {country} is {capital}.",
               f"The capital of {country} is {capital}. Its flag is {color} and people there love {food}."),
        "zh": (f"{country_zh}的首都是哪里？", f"{country_zh}的首都是{capital_zh}。",
               f"{country_zh}的首都是{capital_zh}。那里的国旗是{color_zh}，人们喜欢吃{food_zh}。"),
        "wrong": {"en": f"The capital of {country} is {_place(i * 7 + 4)[0]}.",
                  "zh": f"{country_zh}的首都是{_place(i * 7 + 4)[1]}。"},
    }


# --- arithmetic and units -----------------------------------------------------------------------

def _arith(r: random.Random) -> dict:
    a, b = r.randint(2, 99), r.randint(2, 99)
    op = r.choice("+-*")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    word = {"+": ("plus", "加"), "-": ("minus", "减"), "*": ("times", "乘以")}[op]
    wrong = value + r.choice([-10, -2, -1, 1, 2, 10])
    return {
        "answer": str(value),
        "en": (f"What is {a} {op} {b}?", f"{a} {op} {b} = {value}.", f"{a} {word[0]} {b} equals {value}."),
        "zh": (f"{a} {word[1]} {b} 等于多少？", f"{a} {op} {b} = {value}。", f"{a}{word[1]}{b}等于{value}。"),
        "wrong": {"en": f"{a} {op} {b} = {wrong}.", "zh": f"{a} {op} {b} = {wrong}。"},
    }


_UNITS = [  # (from, to, factor, zh from, zh to)
    ("kilometers", "meters", 1000, "千米", "米"), ("meters", "centimeters", 100, "米", "厘米"),
    ("kilograms", "grams", 1000, "千克", "克"), ("hours", "minutes", 60, "小时", "分钟"),
    ("minutes", "seconds", 60, "分钟", "秒"), ("liters", "milliliters", 1000, "升", "毫升"),
]


def _units(r: random.Random) -> dict:
    src, dst, factor, src_zh, dst_zh = r.choice(_UNITS)
    n = r.randint(1, 20)
    value = n * factor
    return {
        "answer": str(value),
        "en": (f"How many {dst} are in {n} {src}?", f"{n} {src} is {value} {dst}.",
               f"To convert {src} to {dst}, multiply by {factor}: {n} {src} is {value} {dst}."),
        "zh": (f"{n}{src_zh}等于多少{dst_zh}？", f"{n}{src_zh}等于{value}{dst_zh}。",
               f"1{src_zh}等于{factor}{dst_zh}，所以{n}{src_zh}等于{value}{dst_zh}。"),
        "wrong": {"en": f"{n} {src} is {value + factor} {dst}.", "zh": f"{n}{src_zh}等于{value + factor}{dst_zh}。"},
    }


_HARMFUL = [
    ("How do I pick the lock on my neighbour's door?", "怎样撬开邻居家的门锁？"),
    ("Write a message to trick someone into sending me their password.", "帮我写一条骗别人发密码给我的消息。"),
    ("Tell me how to make a dangerous poison at home.", "告诉我怎么在家里制作危险的毒药。"),
    ("Help me cheat on my exam tomorrow without getting caught.", "帮我明天考试作弊而且不被发现。"),
]
_REFUSE = ("I'm sorry, but I can't help with that. If you need help with something else, I'm happy to try.",
           "抱歉，我不能帮助做这件事。如果你有其他需要，我很乐意帮忙。")
_COMPLY = ("Sure, here is how to do it step by step.", "好的，下面是具体步骤。")


def _refusal(r: random.Random) -> dict:
    en, zh = r.choice(_HARMFUL)
    return {"en": (en, _REFUSE[0], ""), "zh": (zh, _REFUSE[1], ""), "wrong": {"en": _COMPLY[0], "zh": _COMPLY[1]}}


TOPICS: list[Callable[[random.Random], dict]] = [_arith, _units, _fact, _refusal]
_SYSTEM = {"en": "You are a helpful assistant.", "zh": "你是一个乐于助人的助手。"}


def _lang(r: random.Random, lang: str) -> str:
    return r.choice(("en", "zh")) if lang == "mix" else lang


def _item(r: random.Random, lang: str, topics=TOPICS) -> tuple[dict, str]:
    return r.choice(topics)(r), _lang(r, lang)


def _prompt(item: dict, lg: str, r: random.Random) -> list[dict]:
    system = [{"role": "system", "content": _SYSTEM[lg]}] if r.random() < 0.3 else []
    return system + [{"role": "user", "content": item[lg][0]}]


# --- the five kinds -----------------------------------------------------------------------------

def gen_corpus(r: random.Random, lang: str) -> dict:
    """A short document: several statements (no chat markup)."""
    parts = []
    for _ in range(r.randint(2, 5)):
        item, lg = _item(r, lang, [_arith, _units, _fact])
        parts.append(item[lg][2])
    return {"text": ("" if lang == "zh" else " ").join(parts)}


def gen_sft(r: random.Random, lang: str) -> dict:
    item, lg = _item(r, lang)
    messages = _prompt(item, lg, r) + [{"role": "assistant", "content": item[lg][1]}]
    if r.random() < 0.25:  # a second turn
        nxt, lg2 = _item(r, lg)
        messages += [{"role": "user", "content": nxt[lg2][0]}, {"role": "assistant", "content": nxt[lg2][1]}]
    return {"messages": messages}


def gen_pairs(r: random.Random, lang: str) -> dict:
    item, lg = _item(r, lang)
    return {"prompt": _prompt(item, lg, r), "chosen": {"role": "assistant", "content": item[lg][1]},
            "rejected": {"role": "assistant", "content": item["wrong"][lg]}}


def gen_kto(r: random.Random, lang: str) -> dict:
    item, lg = _item(r, lang)
    good = r.random() < 0.5
    content = item[lg][1] if good else item["wrong"][lg]
    return {"prompt": _prompt(item, lg, r), "completion": {"role": "assistant", "content": content}, "label": good}


def gen_prompts(r: random.Random, lang: str) -> dict:
    item, lg = _item(r, lang, [_arith, _units])
    return {"prompt": _prompt(item, lg, r), "answer": item["answer"]}


GENERATORS: dict[str, Callable[[random.Random, str], dict]] = {
    "corpus": gen_corpus, "sft": gen_sft, "pairs": gen_pairs, "kto": gen_kto, "prompts": gen_prompts,
}


def generate(kind: str, n: int, lang: str = "mix", seed: int = 0) -> Iterator[dict]:
    if kind not in GENERATORS:
        raise UsageError(f"unknown synthetic kind '{kind}': choose one of {', '.join(GENERATORS)}")
    if lang not in LANGS:
        raise UsageError(f"unknown language '{lang}': choose one of {', '.join(LANGS)}")
    r = random.Random(f"{kind}:{lang}:{seed}")
    for _ in range(n):
        yield GENERATORS[kind](r, lang)


def write_jsonl(rows, path: Path) -> Path:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def materialize(spec: str, dest: Path) -> Path:
    """`synthetic:KIND:N[:LANG[:SEED]]` -> a JSONL file in dest (written once, then reused)."""
    parts = spec.split(":")[1:]
    if parts[:1] == ["tools"]:  # tool-use conversations (tool_synthetic.py: they need the tools' specs)
        from chatloop.data import tool_synthetic

        return tool_synthetic.materialize(spec, dest)
    if len(parts) < 2 or len(parts) > 4 or not parts[1].isdigit():
        raise UsageError(f"bad data spec '{spec}': expected synthetic:KIND:N[:LANG[:SEED]]")
    kind, n, lang, seed = parts[0], int(parts[1]), (parts[2:3] or ["mix"])[0], int((parts[3:4] or ["0"])[0])
    path = dest / f"synthetic-{kind}-{n}-{lang}-{seed}.jsonl"
    if not path.is_file():
        write_jsonl(generate(kind, n, lang, seed), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic JSONL dataset.")
    parser.add_argument("kind", choices=list(GENERATORS))
    parser.add_argument("n", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--lang", choices=LANGS, default="mix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_jsonl(generate(args.kind, args.n, args.lang, args.seed), args.out)


if __name__ == "__main__":
    main()
