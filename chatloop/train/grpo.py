"""Stage `grpo`: group relative policy optimisation with TRL's GRPOTrainer.

    chatloop train grpo --config configs/tiny/grpo.yaml [--resume]

Data: `prompts` JSONL ({"prompt": [...], "answer": "42"}). For each prompt the policy samples
`num_generations` replies; rewards come from programmatic functions (exact answer: the reply's last
number equals `answer`) and/or a trained reward model (`reward_model: runs:tiny-reward`), and the
advantage is each reward relative to its group. `beta` > 0 adds the KL penalty to the reference
(the parent model), logged as `kl`.

Resume is exact (docs/training.md): besides HF's checkpoint, each one holds the trainer's step
counter and its buffer of sampled, scored completions (with `steps_per_generation` or
`num_iterations` > 1 a checkpoint can fall between a generation and the last step that uses it), and
the prompt order of every epoch depends only on (seed, epoch), not on how many epochs this process
has iterated.
"""

import re
from pathlib import Path

from pydantic import Field

from chatloop.errors import UsageError
from chatloop.train.common import setup_torch
from chatloop.train.hf import (
    HFStageConfig, atomic_trainer, load_parent, lora_config, rank_and_world, train_and_publish, trl_args,
)
from chatloop.train.prefs import load_rows
from chatloop.train.rundir import RunDir, note

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class GRPOStageConfig(HFStageConfig):
    reward_model: str | None = Field(default=None, description="A reward run (`runs:NAME`) or directory; None = off.")
    reward_model_weight: float = Field(default=1.0, ge=0, description="Weight of the reward model's score.")
    exact_answer_weight: float = Field(default=1.0, ge=0, description="Weight of the exact-answer reward (0 = off).")
    num_generations: int = Field(default=4, ge=2, description="Replies sampled per prompt (the group).")
    max_completion_length: int = Field(default=32, ge=1, description="Most tokens per sampled reply.")
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature of the replies.")
    beta: float = Field(default=0.04, ge=0, description="KL penalty towards the reference model (0 = none).")


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else str(completion)


def exact_answer(completions, answer, **_kwargs) -> list[float]:
    """1.0 when the reply's last number equals the expected answer, else 0.0."""
    rewards = []
    for completion, expected in zip(completions, answer):
        numbers = _NUMBER.findall(_text(completion))
        rewards.append(1.0 if expected is not None and numbers and numbers[-1] == expected else 0.0)
    return rewards


class RewardModelScore:
    """A reward function backed by a trained reward model (see reward.score)."""

    __name__ = "reward_model"

    def __init__(self, ref: str):
        from chatloop.train.reward import load_reward_model

        self.model, self.tokenizer, self.id = load_reward_model(ref)
        self.model.eval()

    def __call__(self, prompts, completions, **_kwargs) -> list[float]:
        from chatloop.train.reward import score

        return [score(self.model, self.tokenizer, p, {"role": "assistant", "content": _text(c)})
                for p, c in zip(prompts, completions)]


def epoch_seeded(sampler):
    """TRL's RepeatSampler draws each epoch's order from one generator that advances per pass, so a
    process resumed in epoch N would replay epoch 0's order. This returns the same sampler whose
    `set_epoch(N)` (called by the HF loop before each pass) rewinds the generator to where epoch N
    starts: the same orders as TRL's, but a function of (seed, epoch)."""
    import torch
    from trl.trainer.utils import RepeatSampler

    class EpochSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator.manual_seed(self.seed)
                for _ in range(epoch):
                    torch.randperm(self.num_samples, generator=self.generator)

    s = sampler
    return EpochSampler(s.data_source, s.mini_repeat_count, s.batch_size, s.repeat_count, s.shuffle, s.seed)


def resumable_trainer():
    """GRPOTrainer (atomic checkpoints) that saves and restores what TRL keeps between steps."""
    from trl import GRPOTrainer

    class ResumableGRPOTrainer(atomic_trainer(GRPOTrainer)):
        extra_state_required = True

        def _get_train_sampler(self, dataset=None):
            return epoch_seeded(super()._get_train_sampler(dataset))

        def extra_state(self) -> dict:
            # _step decides when to sample again; the buffer holds the completions not used up yet.
            return {**(super().extra_state() or {}), "step": self._step, "buffered_inputs": self._buffered_inputs}

        def load_extra_state(self, state: dict) -> None:
            super().load_extra_state(state)
            self._step = state["step"]
            self._buffered_inputs = state["buffered_inputs"]

    return ResumableGRPOTrainer


def run(cfg: GRPOStageConfig, run_dir: Path, resume: bool) -> dict:
    setup_torch(cfg)
    from datasets import Dataset
    from trl import GRPOConfig

    funcs, weights = [], []
    if cfg.exact_answer_weight > 0:
        funcs.append(exact_answer)
        weights.append(cfg.exact_answer_weight)
    if cfg.reward_model and cfg.reward_model_weight > 0:
        funcs.append(RewardModelScore(cfg.reward_model))
        weights.append(cfg.reward_model_weight)
    if not funcs:
        raise UsageError("grpo needs a reward: set exact_answer_weight > 0 and/or reward_model")
    run = RunDir(run_dir, cfg, stage="grpo", resume=resume, writer=rank_and_world()[0] == 0)
    model, tokenizer, parent = load_parent(cfg.model)
    train, _held, files = load_rows(cfg.model_copy(update={"eval_fraction": 0.0}), run_dir, "prompts")
    args = trl_args(cfg, GRPOConfig, run_dir, num_generations=cfg.num_generations,
                    max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
                    reward_weights=weights)
    trainer = resumable_trainer()(
        model=model, reward_funcs=funcs, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(train), peft_config=lora_config(cfg),
    )
    note(f"grpo: {len(train)} prompts x {cfg.num_generations} generations, rewards "
         f"{[getattr(f, '__name__', 'reward') for f in funcs]} on {parent}")
    return train_and_publish(trainer, run, resume, tokenizer, parent=parent, data=files)
