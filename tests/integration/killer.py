"""Kill a training run with SIGKILL at random moments, one of them during a checkpoint save, and
restart it with --resume each time (shared by the pretrain, SFT and preference/RL resume tests).

    report = kill_repeatedly("dpo", config, out, kills=3, seed=7, during_final=True)

The moments: the first kill lands while a checkpoint is being written (its staging directory
exists); each later one a random (seeded) delay after the next checkpoint is published; with
`during_final` the last one lands while final/ is being written, after the last checkpoint.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from chatloop.train.checkpoints import complete_checkpoints

ROOT = Path(__file__).resolve().parents[2]


def cli(stage: str, config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "chatloop", "train", stage, "--config", str(config), "--out", str(out), *extra]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _wait_for(predicate, proc, timeout=180.0, poll=0.002) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def kill_repeatedly(stage: str, config: Path, out: Path, kills: int = 3, seed: int | None = None,
                    max_delay: float = 0.5, during_final: bool = False) -> dict:
    """Run with --resume, SIGKILL it `kills` times, then let it finish; returns what happened."""
    ckpts = out / "checkpoints"
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    killed_during_save = killed_during_final = False
    done_kills = 0
    for _attempt in range(kills + 4):
        if done_kills >= kills:
            break
        proc = subprocess.Popen(cli(stage, config, out, "--resume"), env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        before = len(complete_checkpoints(ckpts))
        final_turn = during_final and done_kills == kills - 1
        if not killed_during_save:
            _wait_for(lambda: any(ckpts.glob(".step-*.tmp-*")), proc)
        elif final_turn:
            _wait_for(lambda: any(out.glob(".final.tmp-*")), proc)
        else:
            _wait_for(lambda before=before: len(complete_checkpoints(ckpts)) > before, proc)
            time.sleep(rng.uniform(0.0, max_delay))
        if proc.poll() is not None:
            break  # finished before we could kill it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_kills += 1
        if any(ckpts.glob(".step-*.tmp-*")):
            killed_during_save = True
        if final_turn and any(out.glob(".final.tmp-*")):
            killed_during_final = True
    final = subprocess.run(cli(stage, config, out, "--resume"), env=env(), capture_output=True, text=True,
                           timeout=600, check=False)
    return {"kills": done_kills, "killed_during_save": killed_during_save, "killed_during_final": killed_during_final,
            "returncode": final.returncode, "stderr": final.stderr, "seed": seed,
            "stray_staging": any(ckpts.glob(".step-*.tmp-*")) or any(out.glob(".final.tmp-*"))}
