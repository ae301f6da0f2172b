"""`chatloop bench flywheel`: does a turn of the flywheel teach the model what its users prefer?

    chatloop bench flywheel --json [--users 8] [--turns 12] [--heldout 40]

In a throw-away home and database (the default model's conversion is shared, not redone) it starts
`chatloop serve --model default`, lets scripted users chat through the real HTTP API — each asks a
question, regenerates once, picks the answer it prefers and gives thumbs — runs one flywheel turn
(`chatloop flywheel`: export -> DPO with LoRA on the stable version -> register -> gate -> canary),
and then asks held-out questions of stable and candidate. The users' preference is hidden from the
code under test: it only sees their picks and thumbs. Here they prefer concise answers, so the
report says whether the candidate's answers got shorter than stable's, with a paired bootstrap
95% interval over the held-out questions.
"""

import concurrent.futures
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chatloop.config import get_settings

TOPICS = [
    ("the water cycle", "水循环"), ("how bicycles work", "自行车的原理"), ("growing tomatoes", "种西红柿"),
    ("learning a new language", "学习一门新语言"), ("saving money", "存钱"), ("the moon", "月亮"),
    ("making bread at home", "在家做面包"), ("sleeping well", "睡个好觉"), ("volcanoes", "火山"),
    ("writing a good email", "写一封好邮件"), ("how rain forms", "雨是怎么形成的"), ("keeping a cat", "养猫"),
    ("the history of paper", "纸的历史"), ("staying focused", "保持专注"), ("recycling", "垃圾回收"),
    ("how computers store data", "计算机如何存储数据"), ("planning a trip", "计划一次旅行"),
    ("drinking enough water", "多喝水"), ("the seasons", "四季"), ("public speaking", "公开演讲"),
    ("how plants grow", "植物如何生长"), ("cooking rice", "煮米饭"), ("running a first 5k", "第一次跑五公里"),
    ("why the sky is blue", "天空为什么是蓝色的"), ("taking notes in class", "上课记笔记"),
    ("caring for houseplants", "照顾室内植物"), ("how bees make honey", "蜜蜂如何酿蜜"),
    ("reading more books", "多读书"), ("how tides work", "潮汐的原理"), ("making friends in a new city", "在新城市交朋友"),
]
TEMPLATES = [("Tell me about {}.", "给我讲讲{}。"), ("Explain {} to a beginner.", "向初学者解释{}。"),
             ("What should I know about {}?", "关于{}我应该知道什么？"), ("Give me some advice about {}.", "给我一些关于{}的建议。")]


HELD_OUT_TOKENS = 400


def questions(n: int, seed: int) -> list[str]:
    """`n` distinct questions (English and Chinese) in a seeded order."""
    pool = [tpl[lang].format(topic[lang]) for topic in TOPICS for tpl in TEMPLATES for lang in (0, 1)]
    random.Random(seed).shuffle(pool)
    if n > len(pool):
        raise ValueError(f"at most {len(pool)} questions")
    return pool[:n]


def words(text: str) -> int:
    """Words, counting each CJK character as one."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return len("".join(" " if "\u4e00" <= ch <= "\u9fff" else ch for ch in text).split()) + cjk


def prefer_concise(a: str, b: str) -> int:
    """The bench's hidden preference: the shorter answer (0 = a, 1 = b)."""
    return 0 if words(a) <= words(b) else 1


# --- scripted users over the real HTTP API -----------------------------------------------------------

def _answer(client, conv_id: str, body: dict) -> dict:
    """Send one turn and return the finished assistant message."""
    with client.stream("POST", f"/api/conversations/{conv_id}/messages", json=body, timeout=600) as r:
        r.raise_for_status()
        done = None
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[len("data: "):])
                if event["type"] in ("done", "error"):
                    done = event
        if done is None or done["type"] != "done":
            raise RuntimeError(f"the turn did not finish: {done}")
        return done["message"]


def scripted_user(url: str, email: str, prompts: list[str], prefer: Callable[[str, str], int],
                  max_tokens: int, opt_in: bool = True) -> dict:
    """Sign up (opting out of training use unless `opt_in`), then for each prompt: ask, regenerate,
    pick (comparison), thumbs up the pick and thumbs down the other. Returns counts."""
    import httpx

    client = httpx.Client(base_url=url, timeout=600)
    r = client.post("/api/auth/signup", json={"email": email, "password": "scripted user password"})
    r.raise_for_status()
    client.headers["X-CSRF-Token"] = client.cookies["csrftoken"]
    if not opt_in:
        client.patch("/api/me", json={"train_opt_in": False}).raise_for_status()
    counts = {"turns": 0, "comparisons": 0, "thumbs": 0}
    for prompt in prompts:
        conv = client.post("/api/conversations", json={}).json()
        first = _answer(client, conv["id"], {"content": prompt, "max_tokens": max_tokens})
        second = _answer(client, conv["id"], {"regenerate_from": first["parent_id"], "max_tokens": max_tokens})
        pair = [first, second]
        choice = prefer(first["content"], second["content"])
        chosen, rejected = pair[choice], pair[1 - choice]
        if chosen["content"].strip() == rejected["content"].strip():
            continue  # nothing to choose between
        client.post("/api/comparisons", json={"chosen_message_id": chosen["id"],
                                              "rejected_message_id": rejected["id"]}).raise_for_status()
        for message, rating in ((chosen, "up"), (rejected, "down")):
            client.post(f"/api/messages/{message['id']}/feedback", json={"rating": rating}).raise_for_status()
        counts["turns"] += 1
        counts["comparisons"] += 1
        counts["thumbs"] += 2
    return counts


def give_feedback(url: str, users: int, turns: int, prefer: Callable[[str, str], int], *, seed: int = 0,
                  max_tokens: int = 96, prefix: str = "user", opt_in: bool = True) -> dict:
    """`users` scripted users in parallel (the engine batches them), `turns` questions each."""
    pool = questions(users * turns, seed)
    with concurrent.futures.ThreadPoolExecutor(users) as ex:
        futures = [ex.submit(scripted_user, url, f"{prefix}{i}@example.com", pool[i * turns:(i + 1) * turns],
                             prefer, max_tokens, opt_in) for i in range(users)]
        results = [f.result() for f in futures]
    return {k: sum(r[k] for r in results) for k in results[0]}


# --- the bench ---------------------------------------------------------------------------------------

def _cli(env: dict, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "chatloop", *args], input=stdin, capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"chatloop {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip()


def share_default(home: Path) -> Path:
    """A new CHATLOOP_HOME that reuses this machine's one-time conversion of the default model (a
    symlink), so registering it there costs hard links, not a second conversion, and the measured
    kernel choices of `--dtype auto`."""
    from chatloop.models.loading import convert_gguf
    from chatloop.models.refs import resolve

    converted = convert_gguf(resolve("default"))
    cache = home / "models" / converted.parent.name / converted.name
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.exists():
        cache.symlink_to(converted, target_is_directory=True)
    kernels = get_settings().kernels_dir  # `--dtype auto`'s measurements on this machine, shared too
    kernels.mkdir(parents=True, exist_ok=True)
    if not (home / "kernels").exists():
        (home / "kernels").symlink_to(kernels, target_is_directory=True)
    return home


def _held_out_lengths(url: str, key: str, model: str, prompts: list[str], max_tokens: int) -> list[int]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)

    def one(prompt: str) -> int:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=max_tokens, temperature=0)
        return words(r.choices[0].message.content or "")

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        return list(ex.map(one, prompts))


def paired_bootstrap(diffs: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    r = random.Random(seed)
    means = sorted(sum(r.choice(diffs) for _ in diffs) / len(diffs) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def run_flywheel_bench(users: int = 8, turns: int = 12, heldout: int = 40, max_steps: int = 60,
                       limit: int | None = 8) -> dict:
    from chatloop.bench.serve import _free_port, wait_healthy

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        home = share_default(Path(tmp) / "home")
        env = {**os.environ, "CHATLOOP_HOME": str(home), "CHATLOOP_DATABASE_URL": f"sqlite:///{Path(tmp) / 'fw.db'}"}
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "chatloop", "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "server.log", "wb"))
        try:
            wait_healthy(url, 300)
            _cli(env, "users", "create", "admin@example.com", "--password-stdin", stdin="admin password\n")
            key = _cli(env, "keys", "create", "admin@example.com")
            t = time.perf_counter()
            feedback = give_feedback(url, users, turns, prefer_concise)
            feedback_s = time.perf_counter() - t
            config = Path(tmp) / "flywheel.yaml"
            config.write_text(json.dumps({
                "model": "smollm2-135m-instruct", "method": "dpo", "min_rows": 4, "canary_percent": 10,
                "train": {"lora": {"enabled": True, "r": 16, "alpha": 32}, "max_steps": max_steps, "batch_size": 4,
                          "lr": 2e-4, "warmup_steps": 5, "beta": 0.1, "max_length": 384, "save_every": 20,
                          "eval_fraction": 0.0},
                "gate": {"limit": limit}}))
            t = time.perf_counter()
            turn = json.loads(_cli(env, "flywheel", "--config", str(config), "--turn", "bench", "--json"))
            turn_s = time.perf_counter() - t
            held = questions(users * turns + heldout, 0)[users * turns:]  # questions no user asked
            # room to finish: answers cut at the limit would hide a change in length
            stable = _held_out_lengths(url, key, f"smollm2-135m-instruct:{turn['stable']}", held, HELD_OUT_TOKENS)
            candidate = (_held_out_lengths(url, key, turn["candidate"], held, HELD_OUT_TOKENS) if turn["candidate"]
                         else stable)
        finally:
            server.terminate()
            server.wait(30)
    diffs = [s - c for s, c in zip(stable, candidate)]  # > 0: the candidate is more concise
    low, high = paired_bootstrap(diffs)
    mean = sum(diffs) / len(diffs)
    return {
        "hidden_preference": "concise answers (fewer words)",
        "feedback": feedback, "turn": turn,
        "heldout": {"n": len(held), "stable_mean_words": sum(stable) / len(stable),
                    "candidate_mean_words": sum(candidate) / len(candidate),
                    "improvement_words": mean, "improvement_ci": [low, high], "improved": low > 0},
        "seconds": {"feedback": round(feedback_s, 1), "flywheel_turn": round(turn_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }


if __name__ == "__main__":
    print(json.dumps(run_flywheel_bench()))
