"""The prefix-cache part of `chatloop bench serve`: time to first token as a chat grows, and for the
Open WebUI shape (the same 36 tool schemas, about 6,300 prompt tokens with the default model's
format, before every short question).

    chatloop bench serve --json     # keys chat_ttft_ms, openwebui_ttft_ms, prefix_cached_tokens

A 10-turn chat (greedy, each answer fed back as the assistant message) measures TTFT on every
turn; with the prefix cache the 10th turn prefills only its new message, so its TTFT stays near the
1st's although its prompt is several times longer. CHATS such chats run one after another, each
opening with its own words (so none reuses another's turns), and each turn reports its median
over them: one chat's 1st turn is a single ~40 ms sample, which a busy moment could move by half. The Open WebUI requests ask with
`max_tokens` 1, so the time to the first streamed token is not delayed by the tool-call parser
holding back text that may open a call (the first token is the whole answer). `cached_tokens` are
the server's own count (`usage.prompt_tokens_details.cached_tokens`).
"""

import json
import statistics
import time
from pathlib import Path

QUESTIONS = [
    "Hi! Can you help me plan a small garden?",
    "Which vegetables grow well in partial shade?",
    "How often should I water them?",
    "What about tomatoes, do they need full sun?",
    "How far apart should I plant them?",
    "Should I use compost?",
    "How do I keep slugs away?",
    "When is the best time to harvest lettuce?",
    "Can I grow herbs next to the vegetables?",
    "Summarise the plan in three sentences.",
]
OPENINGS = ["", "A new chat. ", "Another chat. "]  # one per chat: their prompts share the template's opening only
CHATS = len(OPENINGS)
TOOLS = Path(__file__).resolve().parent / "data" / "openwebui_tools.json"  # 36 tools as Open WebUI sends them


async def _timed(client, messages: list[dict], max_tokens: int, **extra) -> dict:
    """(ttft, answer text, cached prompt tokens) of one streamed greedy answer."""
    start = time.perf_counter()
    first, text, usage = None, [], None
    stream = await client.chat.completions.create(
        model="default", messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, **extra)
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if first is None and (delta.content or delta.tool_calls or chunk.choices[0].finish_reason):
            first = time.perf_counter()
        text.append(delta.content or "")
    details = getattr(usage, "prompt_tokens_details", None)
    return {"ttft": (first or time.perf_counter()) - start, "text": "".join(text),
            "cached": getattr(details, "cached_tokens", None) or 0,
            "prompt_tokens": usage.prompt_tokens if usage else 0}


async def chat_turns(client, turns: int = 10, tokens: int = 32, opening: str = "") -> list[dict]:
    """TTFT and prompt size of each turn of one growing chat (its first message starts with `opening`)."""
    messages, out = [], []
    for i, question in enumerate(QUESTIONS[:turns]):
        messages.append({"role": "user", "content": opening + question if i == 0 else question})
        r = await _timed(client, messages, tokens)
        messages.append({"role": "assistant", "content": r["text"]})
        out.append(r)
    return out


async def openwebui(client) -> list[dict]:
    """Two requests as Open WebUI sends them: the tool schemas, then a short question."""
    tools = json.loads(TOOLS.read_text(encoding="utf-8"))
    return [await _timed(client, [{"role": "user", "content": q}], 1, tools=tools)
            for q in ("What's the weather in Paris today?", "Convert 20 euros to dollars.")]


async def run(client, turns: int = 10) -> dict:
    """The bench serve keys of this part (`turns`: a chat's length; the keys name the 10th)."""
    chats = [await chat_turns(client, turns, opening=opening) for opening in OPENINGS]
    webui = await openwebui(client)

    def turn(i: int, key: str) -> float:  # the median over the chats
        return statistics.median(chat[i][key] for chat in chats)

    def ms(seconds: float) -> float:
        return round(seconds * 1000, 1)

    return {
        "chat_ttft_ms": {"turn_1": ms(turn(0, "ttft")), "turn_10": ms(turn(-1, "ttft"))},
        "chats": CHATS,
        "chat_prompt_tokens": {"turn_1": chats[0][0]["prompt_tokens"], "turn_10": chats[0][-1]["prompt_tokens"]},
        "openwebui_ttft_ms": {"first": ms(webui[0]["ttft"]), "second": ms(webui[1]["ttft"])},
        "openwebui_prompt_tokens": webui[0]["prompt_tokens"],
        "prefix_cached_tokens": {"chat_turn_1": int(turn(0, "cached")), "chat_turn_10": int(turn(-1, "cached")),
                                 "openwebui_second": webui[1]["cached"]},
        "prefix_ratios": {"chat_turn_10_vs_1": round(turn(-1, "ttft") / turn(0, "ttft"), 2),
                          "openwebui_second_vs_first": round(webui[1]["ttft"] / webui[0]["ttft"], 3)},
    }
