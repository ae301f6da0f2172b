"""Response models of the app API: what each `/api` route answers, as `/openapi.json` shows it.

The routes build plain dicts (schemas.py's `*_out` helpers); these models are their `response_model`,
so FastAPI checks every answer against the documented shape and generated clients get real types.
Free-form parts (a version's training config, a gate's checks) stay `dict[str, Any]`.
"""

from typing import Any, Literal

from pydantic import BaseModel, Field

from chatloop.server.api.schemas import KeyOut, Timestamp, UserOut

__all__ = ["KeyOut", "UserOut"]  # re-exported: the input/output pairs of accounts live in schemas.py


class SettingsOut(BaseModel):
    signup_enabled: bool


class AdminStats(BaseModel):
    users: int
    conversations: int
    messages: int
    feedback_up: int
    feedback_down: int
    comparisons: int
    corrections: int
    api_requests: int
    completion_tokens: int
    engine: "EngineStats"
    model: str = Field(description="The exact version the default model is now.")


class EngineCounts(BaseModel):
    active: int
    waiting: int
    max_batch: int


class EngineStats(BaseModel):
    active: int = Field(description="Sequences in the running batches, over all loaded versions.")
    waiting: int = Field(description="Requests queued for an engine (the queue depth).")
    loaded: list[str]
    engines: dict[str, EngineCounts]


class ModelEntry(BaseModel):
    id: str = Field(description="The exact version, or for a name served by release channel the name.")
    name: str = Field(description="The REF to send in requests.")
    default: bool
    languages: list[str] | None = None
    params: str | None = None
    title: str | None = None
    stable: str | None = Field(default=None, description="Administrators only: the stable NAME:VERSION.")
    canary: str | None = Field(default=None, description="Administrators only: the canary NAME:VERSION.")
    canary_percent: int | None = Field(default=None, description="Administrators only: the canary's share.")


class ConversationOut(BaseModel):
    id: str
    title: str
    model: str
    system_prompt: str
    archived: bool
    current_leaf_id: str | None
    tools: list[str]
    created_at: Timestamp
    updated_at: Timestamp


class FeedbackOut(BaseModel):
    rating: Literal["up", "down"]
    reasons: list[str]
    comment: str


class AttachmentOut(BaseModel):
    id: str
    mime: str
    bytes: int
    width: int
    height: int
    url: str


class MessageOut(BaseModel):
    id: str
    conversation_id: str
    parent_id: str | None
    role: str = Field(description="user, assistant or tool.")
    content: str
    status: str = Field(description="streaming, complete, stopped, error, interrupted or awaiting_approval.")
    model: str | None = Field(description="The exact version that wrote an answer (null on a vote's answers "
                                          "until the pair is voted on).")
    created_at: Timestamp
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    latency_ms: float | None
    feedback: FeedbackOut | None
    duel_id: str | None
    voted: bool | None
    attachments: list[AttachmentOut]
    tool_calls: list[dict[str, Any]] | None = Field(
        description="OpenAI's shape: [{id, type, function: {name, arguments}}].")
    tool_call_id: str | None = Field(default=None, description="Tool messages only: the call this result answers.")
    tool: dict[str, Any] | None = Field(default=None, description=(
        "Tool messages only: {name, arguments, is_error, duration_ms, truncated, declined, data}."))


class ConversationDetail(ConversationOut):
    messages: list[MessageOut] = Field(description="Every branch, flat; `parent_id` links the tree.")


class ToolSpecOut(BaseModel):
    name: str
    title: str
    description: str
    parameters: dict[str, Any]
    read_only: bool
    source: str


class ToolsOut(BaseModel):
    tools: list[ToolSpecOut]
    failed: dict[str, str] = Field(description="Tool sources that are down, and why.")


class GivenFeedback(FeedbackOut):
    message_id: str


class ComparisonOut(BaseModel):
    id: str
    chosen_message_id: str
    rejected_message_id: str


class CorrectionOut(BaseModel):
    id: str
    message_id: str
    content: str


class DocumentOut(BaseModel):
    id: str
    filename: str
    mime: str
    bytes: int
    sha256: str
    conversation_id: str | None
    chunks: int
    created_at: Timestamp


# --- administration: dashboard and releases ----------------------------------------------------------

class Percentiles(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class VersionStats(BaseModel):
    answers: int
    thumbs_up: int
    thumbs_down: int
    thumbs_up_rate: float | None
    thumbs_up_ci: list[float] | None
    latency_ms: Percentiles
    ttft_ms: Percentiles
    tokens_per_s: float | None


class Day(BaseModel):
    day: str
    active_users: int
    conversations: int
    messages: int
    tokens: int


class Votes(BaseModel):
    votes: int
    wins: int
    losses: int
    win_rate: float | None
    win_rate_ci: list[float] | None


class CanaryStats(BaseModel):
    name: str
    percent: int
    stable: str
    canary: str
    stable_stats: VersionStats | None
    canary_stats: VersionStats | None
    votes: Votes


class ChannelsOut(BaseModel):
    name: str
    stable: str | None
    canary: str | None
    canary_percent: int


class Dashboard(BaseModel):
    days: int
    since: Timestamp
    daily: list[Day]
    versions: dict[str, VersionStats]
    canaries: list[CanaryStats]
    engine: EngineStats
    releases: dict[str, ChannelsOut]


class EvalOut(BaseModel):
    suite: str
    score: float | None
    n: int
    ci: list[float | None] | None
    settings: str
    suite_hash: str
    at: Timestamp


class VersionOut(BaseModel):
    id: str
    name: str
    version: str
    path: str
    parent: str | None
    stage: str | None
    source: str
    data_hash: str | None
    config: dict[str, Any] | None
    metrics: dict[str, Any] | None
    created_by: str
    created_at: Timestamp
    evals: list[EvalOut]


class ReleaseModel(ChannelsOut):
    versions: list[VersionOut]


class ReleaseEventOut(BaseModel):
    id: int
    name: str
    action: str = Field(description="register, promote, canary, end-canary or rollback.")
    version: str | None
    previous: str | None
    percent: int | None
    actor: str
    reason: str
    at: Timestamp


class ReleasesOverview(BaseModel):
    models: list[ReleaseModel]
    events: list[ReleaseEventOut]
    serving: dict[str, ChannelsOut]


class Promotion(BaseModel):
    event: ReleaseEventOut
    gate: dict[str, Any] | None = Field(description="The evaluation gate's decision (null when forced or first).")


AdminStats.model_rebuild()
