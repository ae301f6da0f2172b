"""`chatloop bench serve`'s prefix-cache part (bench/prefix.py) against a real server on a tiny model:
its keys, its medians over chats that open differently, and the server's own counts of cached
tokens (counted, not timed)."""

import os

from conftest import make_tiny_model, run_async
from openai import AsyncOpenAI
from server_util import Server, signup

from chatloop.bench import prefix
from chatloop.models.chat_format import render_prompt
from chatloop.engine.prefix_cache import BLOCK


def test_the_prefix_part_takes_medians_over_chats_that_reuse_their_own_turns(tmp_path, tokenizer):
    model = make_tiny_model(tmp_path / "model", tokenizer, context=8192)  # room for the 36 tool schemas
    server = Server(str(model), f"sqlite:///{tmp_path / 'chatloop.db'}", log=tmp_path / "server.log").start()
    try:
        key = signup(server.url, "bench@example.com").post("/api/keys", json={"name": "bench"}).json()["key"]

        async def main() -> dict:
            async with AsyncOpenAI(base_url=server.url + "/v1", api_key=key) as client:
                return await prefix.run(client, turns=4)

        report = run_async(main())  # (the browser tests leave an event loop on the main thread)
    finally:
        server.stop()
    assert report["chats"] == len(prefix.OPENINGS) == 3
    prompts, cached = report["chat_prompt_tokens"], report["prefix_cached_tokens"]
    assert prompts["turn_10"] > prompts["turn_1"] + BLOCK  # the last turn's prompt holds the earlier turns
    # a first turn shares at most the template's opening with the other chats; a later one its own history
    first = [render_prompt(tokenizer, [{"role": "user", "content": opening + prefix.QUESTIONS[0]}]).ids
             for opening in prefix.OPENINGS]
    opening = min(len(os.path.commonprefix([a, b])) for a in first for b in first if a is not b)
    assert cached["chat_turn_1"] <= opening < prompts["turn_1"] - BLOCK
    assert cached["chat_turn_10"] >= cached["chat_turn_1"] + BLOCK
    assert report["openwebui_prompt_tokens"] > 5000
    assert cached["openwebui_second"] >= report["openwebui_prompt_tokens"] - 2 * BLOCK - 20  # all but its question
    assert all(v > 0 for v in (*report["chat_ttft_ms"].values(), *report["openwebui_ttft_ms"].values()))
    ttft = report["chat_ttft_ms"]
    assert abs(report["prefix_ratios"]["chat_turn_10_vs_1"] - ttft["turn_10"] / ttft["turn_1"]) < 0.05
