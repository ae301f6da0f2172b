"""Stage `pretrain`: a Llama-architecture model from scratch on packed text (our own loop).

    chatloop train pretrain --config configs/tiny/pretrain.yaml [--resume] [--set max_steps=50]

Documents are tokenized, joined with EOS and cut into fixed-length blocks (packing: no padding);
a seeded random `holdout_fraction` of blocks is held out for loss/perplexity. Next-token loss, AdamW with
linear warmup then cosine decay to `min_lr_ratio`, gradient accumulation and norm clipping.
Each step logs loss, lr, tokens/s and achieved FLOP/s as a fraction of a matmul peak measured at
start (see flops.py). The batch for micro-step k is a pure function of (seed, k), so the data
position is just the step count and a resumed run sees exactly the batches it would have seen.
"""

import json
import math
import random
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from chatloop.errors import UsageError
from chatloop.train.checkpoints import latest_checkpoint, save_checkpoint
from chatloop.train.common import distributed, expand_data, load_tokenizer, progress, setup_torch
from chatloop.train.config import StageConfig
from chatloop.train.rundir import RunDir, note


class ModelShape(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(default=128, ge=8, description="Width of the residual stream.")
    num_layers: int = Field(default=4, ge=1, description="Transformer blocks.")
    num_heads: int = Field(default=4, ge=1, description="Attention heads (hidden_size must divide by it).")
    num_kv_heads: int = Field(default=4, ge=1, description="Key/value heads (grouped-query attention).")
    intermediate_size: int = Field(default=384, ge=8, description="Width of the SwiGLU MLP.")
    max_position_embeddings: int = Field(default=512, ge=8, description="Longest context the model supports.")
    rope_theta: float = Field(default=10000.0, description="RoPE base frequency.")
    tie_embeddings: bool = Field(default=True, description="Share the input embedding with the lm_head.")


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(default=3e-3, gt=0, description="Peak learning rate (after warmup).")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="Final lr as a fraction of the peak.")
    warmup_steps: int = Field(default=20, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW decay on matrices (not norms).")
    beta1: float = Field(default=0.9, description="AdamW beta1.")
    beta2: float = Field(default=0.95, description="AdamW beta2.")
    grad_clip: float = Field(default=1.0, gt=0, description="Clip the global gradient norm to this.")


class PretrainConfig(StageConfig):
    tokenizer: str = Field(description="Tokenizer: `runs:NAME` (a tokenizer run), `default`, or a directory.")
    data: list[str] = Field(description="Text corpora (.txt, text/sft .jsonl; chats rendered with the chat template), "
                            "globs or synthetic:KIND:N specs.")
    model: ModelShape = Field(default_factory=ModelShape, description="Architecture (LlamaConfig).")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and schedule.")
    seq_len: int = Field(default=128, ge=8, description="Tokens per packed training sequence.")
    batch_size: int = Field(default=16, ge=1, description="Sequences per micro-batch.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    max_steps: int = Field(default=200, ge=1, description="Optimizer steps to train for.")
    eval_every: int = Field(default=50, ge=1, description="Held-out evaluation every N steps (and at the end).")
    eval_batches: int = Field(default=4, ge=1, description="Held-out micro-batches per evaluation.")
    holdout_fraction: float = Field(default=0.05, gt=0, lt=0.5, description="Share of blocks held out.")
    measure_peak: bool = Field(default=True, description="Measure the matmul peak at start to report MFU.")


# --- data ---------------------------------------------------------------------------------------

def pack_blocks(tokenizer, files: list[Path], seq_len: int):
    """All documents tokenized, EOS-separated, concatenated and cut into [n, seq_len] blocks."""
    import torch

    from chatloop.data.schemas import read_texts

    def render(messages: list[dict]) -> str:  # chat data teaches the base model the chat format
        return tokenizer.apply_chat_template(messages, tokenize=False)

    stream: list[int] = []
    for path in files:
        for text in read_texts(path, render):
            stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
            stream.append(tokenizer.eos_token_id)
    n = len(stream) // seq_len
    if n < 4:
        raise UsageError(f"the corpus has {len(stream)} tokens: too few for seq_len {seq_len}; add data")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


class BatchOrder:
    """Micro-batch k holds examples k*B..k*B+B-1 of an endless stream of per-epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        import torch

        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}
        return self._perms[epoch]

    def indices(self, micro_step: int) -> list[int]:
        start = micro_step * self.batch_size
        return [self._perm(i // self.n)[i % self.n] for i in range(start, start + self.batch_size)]


# --- model, optimizer, checkpoints ---------------------------------------------------------------

def build_model(cfg: PretrainConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = cfg.model
    if shape.hidden_size % shape.num_heads or shape.num_heads % shape.num_kv_heads:
        raise UsageError("model.hidden_size must divide by num_heads, and num_heads by num_kv_heads")
    if cfg.seq_len > shape.max_position_embeddings:
        raise UsageError("seq_len exceeds model.max_position_embeddings")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=shape.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def build_optimizer(model, optim: OptimConfig, max_steps: int):
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=optim.lr, betas=(optim.beta1, optim.beta2),
    )

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        progress = (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * cosine

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def write_state(tmp: Path, model, opt, sched, step: int, cfg: PretrainConfig, config_text: str) -> None:
    import torch
    from safetensors.torch import save_file

    # Clones: tied weights share storage, which save_file refuses.
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / "trainer_state.pt")
    state = {"step": step, "micro_steps": step * cfg.grad_accum, "python_rng": random.getstate()}
    (tmp / "state.json").write_text(json.dumps(state))
    (tmp / "config.yaml").write_text(config_text)


def load_state(path: Path, model, opt, sched) -> int:
    import torch
    from safetensors.torch import load_file

    model.load_state_dict(load_file(path / "model.safetensors"))
    blob = torch.load(path / "trainer_state.pt", weights_only=True)
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    state = json.loads((path / "state.json").read_text())
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return int(state["step"])


def train_step(model, opt, sched, micro_batches: list, grad_clip: float, world: int = 1) -> tuple[float, float]:
    """One optimizer step over gradient-accumulated micro-batches; returns (mean loss, grad norm).
    With world > 1, `model` is DDP-wrapped and the returned loss is averaged over the processes."""
    import torch

    loss_sum = 0.0
    for x in micro_batches:
        loss = model(input_ids=x, labels=x).loss
        (loss / len(micro_batches)).backward()
        loss_sum += loss.item()
    if world > 1:
        total = torch.tensor([loss_sum])
        torch.distributed.all_reduce(total)
        loss_sum = total.item() / world
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip).item()
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum / len(micro_batches), grad_norm


def evaluate(model, blocks, cfg: PretrainConfig) -> dict:
    import torch

    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, min(len(blocks), cfg.eval_batches * cfg.batch_size), cfg.batch_size):
            x = blocks[i : i + cfg.batch_size]
            losses.append(model(input_ids=x, labels=x).loss.item())
    model.train()
    loss = sum(losses) / len(losses)
    return {"eval_loss": round(loss, 5), "eval_ppl": round(math.exp(min(loss, 50.0)), 3)}


# --- the loop ------------------------------------------------------------------------------------

def run(cfg: PretrainConfig, run_dir: Path, resume: bool) -> dict:
    setup_torch(cfg)
    import torch

    from chatloop.train.config import dump_config
    from chatloop.train.flops import flops_per_token, measure_matmul_peak

    rank, world = distributed()
    if cfg.batch_size % world:
        raise UsageError(f"batch_size {cfg.batch_size} must divide by the {world} processes")
    run = RunDir(run_dir, cfg, stage="pretrain", resume=resume, writer=rank == 0)
    tokenizer = load_tokenizer(cfg.tokenizer)
    files = expand_data(cfg.data, run_dir)
    blocks = pack_blocks(tokenizer, files, cfg.seq_len)
    # A seeded random subset is held out, so it mixes every data file like the training blocks do.
    shuffled = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(cfg.seed))
    n_hold = max(1, int(len(blocks) * cfg.holdout_fraction))
    train, held = blocks[shuffled[n_hold:]], blocks[shuffled[:n_hold]]
    order = BatchOrder(len(train), cfg.batch_size, cfg.seed)

    model = build_model(cfg, tokenizer)
    model.train()
    opt, sched = build_optimizer(model, cfg.optim, cfg.max_steps)
    start = 0
    if resume:
        if (ckpt := latest_checkpoint(run.checkpoints)) is not None:
            start = load_state(ckpt, model, opt, sched)
            note(f"resumed from {ckpt} (step {start})")
        run.rewind_metrics(start)
    step_model = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(model)
    n_params = sum(p.numel() for p in model.parameters())
    peak = measure_matmul_peak() if cfg.measure_peak else None
    fpt = flops_per_token(model, cfg.seq_len)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    note(f"pretrain: {n_params / 1e6:.2f}M params, {len(train)} train / {len(held)} held-out blocks of "
         f"{cfg.seq_len} tokens" + (f", matmul peak {peak / 1e9:.1f} GFLOP/s" if peak else ""))
    config_text = dump_config(cfg)
    record: dict = {}
    bar = progress(cfg.max_steps, start, "pretrain", enabled=rank == 0)
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        lr = sched.get_last_lr()[0]
        micro_batches = [train[order.indices(step * cfg.grad_accum + m)[rank::world]] for m in range(cfg.grad_accum)]
        loss, grad_norm = train_step(step_model, opt, sched, micro_batches, cfg.optim.grad_clip, world)
        dt = time.perf_counter() - t0
        done = step + 1
        record = {"step": done, "loss": round(loss, 5), "lr": lr,
                  "grad_norm": round(grad_norm, 4), "tokens_per_s": round(tokens_per_step / dt, 1),
                  "flops_per_s": round(fpt * tokens_per_step / dt, 1)}
        if peak:
            record["mfu"] = round(record["flops_per_s"] / (peak * world), 4)  # peak is per process
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            record.update(evaluate(model, held, cfg))
        run.log(record)
        bar.set_postfix(loss=record["loss"], tok_s=record["tokens_per_s"])
        bar.update(1)
        if done % cfg.save_every == 0 and done < cfg.max_steps:
            if rank == 0:
                save_checkpoint(run.checkpoints, done,
                                lambda tmp, done=done: write_state(tmp, model, opt, sched, done, cfg, config_text),
                                cfg.keep_checkpoints)
            if world > 1:
                torch.distributed.barrier()
    bar.close()
    if "eval_loss" not in record:  # resumed after the last step had already been logged
        record.update(evaluate(model, held, cfg))
    metrics = {k: record.get(k) for k in ("step", "loss", "eval_loss", "eval_ppl", "tokens_per_s", "mfu")}
    metrics.update(params=n_params, matmul_peak_flops=peak)

    def write_final(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    if rank > 0:
        torch.distributed.barrier()  # rank 0 publishes final/
        torch.distributed.destroy_process_group()
        return {"rank": rank, **metrics}
    final = run.publish_final(write_final, parent=None, data=files, metrics=metrics, step=cfg.max_steps)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    note(f"pretrain done: loss {metrics['loss']}, held-out loss {metrics['eval_loss']} "
         f"(ppl {metrics['eval_ppl']}) -> {final}")
    return {"final": str(final), **metrics}
