"""llama.cpp (through llama-cpp-python, when installed) decoding a GGUF the way `bench decode`
measures our engine: the same prompts, the same number of tokens each (end of text suppressed),
after a warm-up, tokens over wall time with prefill included, the fastest of `rounds` rounds.

    python -m chatloop.bench.llama_cpp MODEL.gguf TOKENS ROUNDS PROMPT [PROMPT ...]   # prints {"tok_s": ...}

It runs in a process of its own: inside the benchmark's process, beside PyTorch, llama.cpp measured
about half its speed (both link an OpenMP runtime and their thread pools contend), which would flatter
our engine.
"""

import json
import os
import subprocess
import sys
import time


def measure(gguf: str, tokens: int, prompts: list[str], rounds: int = 1) -> float:
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_threads=os.cpu_count(), n_ctx=2048, verbose=False)
    no_end = {llm.token_eos(): float("-inf")}
    chat = [[{"role": "user", "content": p}] for p in prompts]
    llm.create_chat_completion(chat[0], max_tokens=8, temperature=0)  # warm-up
    best = 0.0
    for _ in range(rounds):
        done, start = 0, time.perf_counter()
        for messages in chat:
            out = llm.create_chat_completion(messages, max_tokens=tokens, temperature=0, logit_bias=no_end)
            done += out["usage"]["completion_tokens"]
        best = max(best, done / (time.perf_counter() - start))
    return best


def tok_s(gguf: str, tokens: int, prompts: list[str], rounds: int = 1) -> float:
    """Run `measure` in a fresh process; its tokens/s."""
    proc = subprocess.run([sys.executable, "-m", "chatloop.bench.llama_cpp", gguf, str(tokens), str(rounds), *prompts],
                          capture_output=True, text=True, check=False, timeout=900)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise RuntimeError(f"llama.cpp benchmark failed: {lines[-1] if lines else proc.returncode}")
    return json.loads(proc.stdout)["tok_s"]


if __name__ == "__main__":
    print(json.dumps({"tok_s": measure(sys.argv[1], int(sys.argv[2]), sys.argv[4:], int(sys.argv[3]))}))
