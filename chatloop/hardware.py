"""What this machine computes with: the CPU's model and instruction-set flags, whether it has native
bfloat16 arithmetic, and a fingerprint for caches of measurements made on it.

    python -m chatloop.hardware      # prints the fingerprint's fields

Native bf16 (AVX-512 BF16 or AMX) is what makes bf16 matrix multiplies fast on a CPU; without it
oneDNN emulates them and they are slower than float32. PyTorch's own check
(`torch.ops.mkldnn._is_mkldnn_bf16_supported`) only asks for AVX-512, and neither it nor
/proc/cpuinfo sees the caps `ONEDNN_MAX_CPU_ISA` and `ATEN_CPU_CAPABILITY` put on the kernels, so
both are read here.
"""

import functools
import hashlib
import json
import os
import platform

# oneDNN's ISA names, in increasing order, from its documentation (ONEDNN_MAX_CPU_ISA).
_ONEDNN_ISAS = ["SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
                "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "ALL"]


@functools.cache
def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    if fields:
                        break  # the first processor's block is enough
                    continue
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def capped_below(isa: str) -> bool:
    """True when ONEDNN_MAX_CPU_ISA caps oneDNN below `isa` (one of oneDNN's ISA names)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap not in _ONEDNN_ISAS:
        return False
    return _ONEDNN_ISAS.index(cap) < _ONEDNN_ISAS.index(isa)


def native_bf16() -> bool:
    """The CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX) and nothing caps the kernels below it."""
    flags = cpu_flags()
    has = "avx512_bf16" in flags or "amx_bf16" in flags or "bf16" in flags  # "bf16": arm64's flag
    aten_cap = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    return has and not capped_below("AVX512_CORE_BF16") and aten_cap not in ("default", "avx2", "zvector")


def fingerprint() -> dict[str, str]:
    """What a measurement of kernel speed depends on: CPU, its flags, the caps, the torch build."""
    import torch

    return {
        "cpu": cpu_model(),
        "flags": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12],
        "cores": str(os.cpu_count()),
        "threads": str(torch.get_num_threads()),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "lowbit": os.environ.get("CHATLOOP_LOWBIT", "") + "/" + os.environ.get("CHATLOOP_LOWBIT_AVX512", "")
        + ("/amx=" + os.environ["CHATLOOP_LOWBIT_AMX"] if os.environ.get("CHATLOOP_LOWBIT_AMX") else ""),
        "torch": torch.__version__,
    }


def fingerprint_key() -> str:
    return hashlib.sha256(json.dumps(fingerprint(), sort_keys=True).encode()).hexdigest()[:16]


if __name__ == "__main__":
    print(json.dumps({**fingerprint(), "native_bf16": native_bf16()}, indent=2))
