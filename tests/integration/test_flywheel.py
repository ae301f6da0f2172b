"""One turn of the flywheel end to end, through the real HTTP API, on the real default model:
scripted users with a hidden preference (this test's own; the code under test only sees their
picks and thumbs) chat with the stable model -> `chatloop flywheel` exports, trains DPO with LoRA on
the stable version, registers, gates and starts a 50% canary -> new conversations split between
the versions -> promote -> rollback restores the previous stable at once."""

import json
import os
import subprocess
import sys

import httpx
import openai
import pytest

from chatloop.bench.flywheel import give_feedback
from conftest import home_sharing_default
from server_util import Server, new_key, signup, sse_events

pytestmark = pytest.mark.slow
NAME = "smollm2-135m-instruct"


def prefers_more_commas(a: str, b: str) -> int:
    """This test's hidden taste: answers with more commas (ties: the first)."""
    return 0 if a.count(",") + a.count("，") >= b.count(",") + b.count("，") else 1


def test_one_turn_of_the_flywheel_end_to_end(tmp_path, default_dir):
    home = home_sharing_default(tmp_path / "home", default_dir)
    db_url = f"sqlite:///{tmp_path / 'chatloop.db'}"
    env = {**os.environ, "CHATLOOP_HOME": str(home), "CHATLOOP_DATABASE_URL": db_url}
    server = Server("default", db_url, dtype="auto", env={"CHATLOOP_HOME": str(home)},
                    log=tmp_path / "server.log").start()
    try:
        admin = signup(server.url, "admin@example.com")
        key = new_key(admin)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=300)
        assert client.chat.completions.create(model="default", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=4).model == f"{NAME}:1"
        counts = give_feedback(server.url, users=4, turns=3, prefer=prefers_more_commas, max_tokens=32,
                               prefix="scripted")
        assert counts["comparisons"] >= 9 and counts["thumbs"] == 2 * counts["comparisons"]
        # a user who opted out of training use: none of this may reach the export
        give_feedback(server.url, users=1, turns=2, prefer=prefers_more_commas, max_tokens=24, prefix="optout",
                      seed=5, opt_in=False)

        config = tmp_path / "flywheel.yaml"
        config.write_text(json.dumps({
            "model": NAME, "method": "dpo", "min_rows": 8, "canary_percent": 50,
            "train": {"lora": {"enabled": True, "r": 8, "alpha": 16}, "max_steps": 4, "batch_size": 4,
                      "lr": 5e-5, "warmup_steps": 1, "max_length": 256, "save_every": 2, "eval_fraction": 0.0},
            "gate": {"limit": 2}}))
        turn = subprocess.run([sys.executable, "-m", "chatloop", "flywheel", "--config", str(config), "--turn", "t1",
                               "--json"], capture_output=True, text=True, env=env, timeout=1800)
        assert turn.returncode == 0, turn.stderr[-3000:]
        report = json.loads(turn.stdout)
        assert report["stable"] == "1" and report["candidate"] == f"{NAME}:2" and report["finished"]
        assert report["data"]["kind"] == "pairs" and report["data"]["rows"] == counts["comparisons"]
        assert len(report["data"]["snapshot"]) == 64
        assert report["gate"]["passed"] and {c["name"] for c in report["gate"]["checks"]} >= {
            "capability_drop", "flip_rate_rise", "sycophancy_rise"}
        assert report["canary"]["started"] and report["canary"]["event"]["percent"] == 50
        # the candidate's lineage: parent, the exact export it was trained on, who made it
        shown = json.loads(subprocess.run([sys.executable, "-m", "chatloop", "models", "show", f"{NAME}:2", "--json"],
                                          capture_output=True, text=True, env=env, check=True).stdout)
        assert shown["parent"] == f"{NAME}:1" and shown["data_hash"] == report["data"]["snapshot"]
        assert shown["stage"] == "dpo" and shown["source"] == "flywheel:t1"
        assert {e["suite"] for e in shown["evals"]} == {"capability", "sycophancy"}
        # running the same turn again does nothing twice
        again = subprocess.run([sys.executable, "-m", "chatloop", "flywheel", "--config", str(config), "--turn", "t1",
                                "--json"], capture_output=True, text=True, env=env, timeout=300)
        assert again.returncode == 0 and json.loads(again.stdout)["candidate"] == f"{NAME}:2"

        # the canary reaches the running server; new conversations split between the versions
        versions = set()
        for i in range(16):
            conv = admin.post("/api/conversations", json={}).json()
            with admin.stream("POST", f"/api/conversations/{conv['id']}/messages",
                              json={"content": f"Name a color {i}", "max_tokens": 3}) as r:
                versions.add(sse_events(r)[-2]["message"]["model"])
        assert versions == {f"{NAME}:1", f"{NAME}:2"}

        promoted = admin.post("/api/admin/releases/promote", json={"model": f"{NAME}:2"})  # gated on stored evals
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["gate"]["passed"]
        ask = dict(model="default", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert client.chat.completions.create(**ask).model == f"{NAME}:2"
        rolled = admin.post("/api/admin/releases/rollback", json={"name": NAME, "reason": "the test says so"})
        assert rolled.status_code == 200 and rolled.json()["version"] == "1"
        assert client.chat.completions.create(**ask).model == f"{NAME}:1"  # at once
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok", "model": f"{NAME}:1"}
    finally:
        server.stop()
