"""The prefix cache on the real default model in float32: a multi-turn chat rendered with its chat
template answers token for token as without the cache, and each turn takes the previous turn's
prompt and answer from the cache (counted, not timed)."""

import pytest

from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import Engine
from chatloop.models.chat_format import render_prompt
from chatloop.models.loading import load_model

QUESTIONS = ["What is the capital of France?", "And of Italy?", "Which of the two is bigger?",
             "Name a famous building in each."]


@pytest.mark.slow
def test_a_chat_on_the_default_model_is_the_same_with_the_cache_and_reuses_each_turn(default_dir):
    engines = [Engine(lambda: load_model("default", "float32"), max_batch=2, prefix_cache_mb=mb) for mb in (0, 256)]
    try:
        chats = {0: [], 1: []}
        previous = None  # (prompt tokens, result) of the last turn, with the cache
        for question in QUESTIONS:
            results = []
            for i, engine in enumerate(engines):
                chats[i].append({"role": "user", "content": question})
                prompt = render_prompt(engine.tokenizer, chats[i]).ids
                result = engine.generate(prompt, SamplingParams(max_tokens=40, temperature=0))
                chats[i].append({"role": "assistant", "content": result.text})
                results.append((prompt, result))
            (cold_prompt, cold), (prompt, warm) = results
            assert warm.token_ids == cold.token_ids and prompt == cold_prompt, question
            assert cold.cached_tokens == 0
            if previous is not None:
                last_prompt, last = previous
                assert prompt[:len(last_prompt) + len(last.token_ids)] == last_prompt + last.token_ids  # a token prefix
                # an answer ended by its end token fed every token it kept; one cut by max_tokens all but the last
                held = len(last_prompt) + len(last.token_ids) - (last.finish_reason == "length")
                assert warm.cached_tokens == min(held, len(prompt) - 1), question  # to the token
            previous = (prompt, warm)
        stats = engines[1].stats()
        assert stats["prefix_cached_tokens"] > stats["prefill_tokens"]  # most of the chat was prefilled once
    finally:
        for engine in engines:
            engine.shutdown()
