"""The engine on a GPU (`--device cuda`): the same runner and scheduler code as on the CPU. Skipped
where torch sees no CUDA device, except the checks of what happens without one."""

import pytest
import torch

from chatloop.engine.runner import ModelRunner
from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import Engine, check_device
from chatloop.errors import UsageError
from chatloop.models.loading import load_model

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")


def test_unknown_or_missing_devices_are_refused_with_a_clear_error():
    with pytest.raises(UsageError, match="choose cpu or cuda"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            check_device("cuda")
    assert check_device("cpu") == "cpu"


@gpu
def test_cuda_runner_computes_what_the_cpu_runner_computes(tiny_dir):
    model = load_model(str(tiny_dir), "float32").model
    prompts = [list(range(100, 130)), list(range(200, 210))]
    cpu = ModelRunner(model, "float32", max_slots=2, max_len=64)
    cuda = ModelRunner(model, "float32", max_slots=2, max_len=64, device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = cpu.prefill(prompts), cuda.prefill(prompts)
    assert b.device.type == "cpu"  # logits come back for sampling
    torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)
    for step in range(4):
        tokens = [int(t) for t in a.argmax(-1)]
        a, b = cpu.decode(tokens), cuda.decode(tokens)
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


@gpu
def test_cuda_engine_streams_in_bf16_and_refuses_cpu_only_formats(tiny_dir):
    engine = Engine(lambda: load_model(str(tiny_dir), "auto"), max_batch=4, device="cuda")
    try:
        assert engine.plan.act == "bfloat16"
        handles = [engine.submit(list(range(100, 120 + i)), SamplingParams(max_tokens=8, temperature=0))
                   for i in range(4)]
        results = [h.wait() for h in handles]
        assert all(r.completion_tokens == 8 and r.finish_reason == "length" for r in results)
        assert engine.runner.k[0].is_cuda and engine.runner.embed.is_cuda
    finally:
        engine.shutdown()
    with pytest.raises(UsageError, match="CPU only"):
        Engine(lambda: load_model(str(tiny_dir), "int8"), max_batch=1, device="cuda")
