"""Settings read from the environment (prefix CHATLOOP_), typed with pydantic-settings.

    CHATLOOP_HOME                    where models, runs and the SQLite database live (~/.chatloop)
    CHATLOOP_DATABASE_URL            the database (default sqlite:///$CHATLOOP_HOME/chatloop.db)
    CHATLOOP_RATE_LIMIT_PER_MINUTE, CHATLOOP_MAX_BODY_BYTES, CHATLOOP_MAX_WAITING, CHATLOOP_MAX_BATCH
    CHATLOOP_DEFAULT_MAX_TOKENS, CHATLOOP_MAX_MESSAGES, CHATLOOP_MAX_GENERATION_SECONDS   request budget
    CHATLOOP_MAX_LOADED_MODELS, CHATLOOP_MODEL_IDLE_SECONDS                               engine pool
    CHATLOOP_PREFIX_CACHE_MB                                                              prefix cache
    CHATLOOP_BACKEND, CHATLOOP_BACKEND_KEY                     a remote engine (serve --backend openai:URL)
    CHATLOOP_RELEASE_POLL_SECONDS, CHATLOOP_VOTE_SHARE                                    releases
    CHATLOOP_MAX_IMAGE_BYTES, CHATLOOP_MAX_IMAGE_PIXELS, CHATLOOP_MAX_IMAGES, CHATLOOP_OCR_TIMEOUT_SECONDS  images
    CHATLOOP_DEVICE                  cpu or cuda (the engines' device; --device)
    CHATLOOP_KERNEL_PPL_BUDGET       accuracy budget of `--dtype auto`'s measured kernel choice
    CHATLOOP_MCP_CONFIG, CHATLOOP_TOOL_TIMEOUT_SECONDS, CHATLOOP_TOOL_MAX_OUTPUT_CHARS, CHATLOOP_MAX_TOOL_ROUNDS  tools

`chatloop serve` flags (--db, --max-batch, --backend, --backend-key) override the matching settings for that server.
"""

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATLOOP_", extra="ignore")

    home: Path = Field(default=Path("~/.chatloop"), description="Root of models/, runs/ and chatloop.db.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in home by default.")
    rate_limit_per_minute: int = Field(default=600, description="Requests per minute per user and per API key.")
    max_body_bytes: int = Field(default=1 << 20, description="Largest accepted request body (413 above).")
    max_waiting: int = Field(default=64, description="Requests queued per engine before 503 overloaded.")
    max_batch: int = Field(default=8, ge=1, description="Sequences an engine decodes together.")
    default_max_tokens: int = Field(
        default=1024, ge=1, description="Completion tokens for a request that sets no max_tokens (clipped to the "
                                        "context left; a conversation keeps at most half the context for it).")
    max_messages: int = Field(default=2048, ge=1, description="Most messages in one request (400 above).")
    max_generation_seconds: float = Field(
        default=300.0, gt=0, description="Wall-clock budget of one answer from submission, queueing included; "
                                         "then it ends with finish_reason 'length'.")
    max_loaded_models: int = Field(
        default=2, ge=1, description="Model versions held in memory besides the ones the server serves (its "
                                     "`--model`s' stable and canary versions); loading another unloads the least "
                                     "recently used idle one.")
    model_idle_seconds: float = Field(
        default=600.0, ge=0, description="A loaded version other than the server's default is unloaded after "
                                         "this long without requests.")
    prefix_cache_mb: int = Field(
        default=512, ge=0, description="Memory (MiB) per loaded model for KV blocks of earlier prompts and answers, "
                                       "so a chat's earlier turns and shared system prompts or tool schemas are "
                                       "not prefilled again; least recently used blocks go first; 0 disables it.")
    backend: str | None = Field(
        default=None, description="openai:URL: serve the models of an OpenAI-compatible server (vLLM, llama.cpp's "
                                  "server, another chatloop) instead of loading them here (docs/remote-engines.md).")
    backend_key: str | None = Field(default=None, repr=False, description="The API key sent to the backend.")
    release_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often a server checks the database for release actions (promote, "
                                       "canary, rollback) made by the CLI, the admin page or another server.")
    vote_share: float = Field(
        default=0.1, ge=0, le=1, description="While a canary runs, the share of web-UI turns that show two "
                                             "answers (stable and canary, order random, versions hidden) for a vote.")
    max_image_bytes: int = Field(
        default=10 << 20, ge=1, description="Largest image (encoded) accepted in a message or an upload (413 above); "
                                            "a request carrying images may be this much (base64: 4/3 of it) larger "
                                            "than max_body_bytes.")
    max_image_pixels: int = Field(default=25_000_000, ge=1, description="Most pixels (width × height) of one image "
                                                                       "(413 above): a decompression-bomb guard.")
    max_images: int = Field(default=4, ge=0, description="Most images in one request (400 above).")
    ocr_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Budget for reading the text of a request's images for a text-only model "
                                        "(504 after it).")
    secure_cookies: bool = Field(default=False, description="Mark session cookies Secure (serve over HTTPS).")
    mcp_config: Path | None = Field(
        default=None, description="A tools config file: \"mcpServers\" (MCP servers) and \"openapiPlugins\"; "
                                  "`serve --mcp-config` sets it.")
    tool_timeout_seconds: float = Field(default=30.0, gt=0, description="Budget of one tool call (the model is "
                                                                       "told it timed out after it).")
    tool_max_output_chars: int = Field(default=16_000, ge=100, description="A tool result longer than this is "
                                                                          "cut (the model is told).")
    max_tool_rounds: int = Field(default=6, ge=1, description="Model answers per conversation turn when tools "
                                                              "are called (each round: calls, results, an answer).")

    device: str = Field(default="cpu", description="Where engines run: cpu, or cuda (bf16, SDPA attention); "
                                                   "`--device` sets it per command.")
    kv_cache: Literal["int8", "float16"] = Field(
        default="int8", description="The key/value cache where our CPU attention kernel runs: int8 (blocks of 32 "
                                    "with a scale each, 56% of float16's bytes) or float16.")
    kernel_ppl_budget: float = Field(
        default=0.02, ge=0, description="`--dtype auto` uses a weight format only if its perplexity on a "
                                        "calibration text is at most this much (relative) above float32's.")

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def kernels_dir(self) -> Path:
        """`--dtype auto`'s measured kernel choices, per machine and model (engine/kernels.py)."""
        return self.home_dir / "kernels"

    @property
    def runs_dir(self) -> Path:
        return self.home_dir / "runs"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'chatloop.db'}"


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; tests change env between calls)."""
    return Settings()
