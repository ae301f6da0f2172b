"""Pydantic request models of the app API (and the account responses), and ORM -> JSON conversions;
the other response models are in responses.py."""

import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from chatloop.errors import UsageError
from chatloop.store.accounts import MIN_PASSWORD, normalize_email
from chatloop.store.models import ApiKey, Attachment, Conversation, Feedback, Message, User


def _utc(value):
    """Stored times are UTC; SQLite hands them back without their offset (not RFC 3339 then)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


Timestamp = Annotated[datetime, BeforeValidator(_utc), Field(description="RFC 3339 date and time, UTC.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Credentials(Strict):
    email: str = Field(min_length=3, max_length=320, pattern=r"^\s*[^@\s]+@\S*\.\S*\s*$")
    password: str = Field(min_length=1, max_length=1024)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        try:
            return normalize_email(v)
        except UsageError as e:
            raise ValueError("not a valid email address") from e


class SignupIn(Credentials):
    password: str = Field(min_length=MIN_PASSWORD, max_length=1024)


class UserOut(BaseModel):
    id: str
    email: str
    is_admin: bool
    disabled: bool
    train_opt_in: bool
    custom_instructions: str
    locale: str
    theme: str
    created_at: Timestamp


class UserPatch(Strict):
    train_opt_in: bool | None = None
    custom_instructions: str | None = Field(default=None, max_length=8000)
    locale: Literal["en", "zh-CN"] | None = None
    theme: Literal["light", "dark", "system"] | None = None


class AdminUserPatch(Strict):
    disabled: bool | None = None
    is_admin: bool | None = None


class AdminSettings(Strict):
    signup_enabled: bool


class KeyCreate(Strict):
    name: str = Field(default="API key", min_length=1, max_length=100)


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked: bool
    key: str | None = None  # only in the response that creates it


class ConversationCreate(Strict):
    title: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=8000)
    tools: list[str] | None = Field(default=None, max_length=64, description=(
        "Names of the tools (GET /api/tools) this conversation offers the model; [] for none."))


class ConversationPatch(Strict):
    title: str | None = Field(default=None, max_length=200)
    archived: bool | None = None
    current_leaf_id: str | None = None
    system_prompt: str | None = Field(default=None, max_length=8000)
    model: str | None = Field(default=None, max_length=200)
    tools: list[str] | None = Field(default=None, max_length=64, description=(
        "Names of the tools (GET /api/tools) this conversation offers the model; [] for none."))


class ToolApproval(Strict):
    approve: bool = Field(description="Run the answer's calls that wait for approval (true), or decline them.")


class FeedbackIn(Strict):
    rating: Literal["up", "down"]
    reasons: list[Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[^,]+$")]] = Field(
        default_factory=list, max_length=10, description="Short tags without commas (docs/api.md lists the UI's).")
    comment: str = Field(default="", max_length=4000)


class ComparisonIn(Strict):
    chosen_message_id: str
    rejected_message_id: str


class CorrectionIn(Strict):
    content: str = Field(min_length=1, max_length=100_000)


class SendMessage(Strict):
    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"content": "Say hello", "max_tokens": 8}]})

    content: str | None = Field(default=None, min_length=1, max_length=100_000)
    attachments: list[str] | None = Field(default=None, max_length=16, description=(
        "Ids of images uploaded with POST /api/uploads, sent with this message (shown before its text); "
        "with attachments, content may be omitted."))
    parent_id: str | None = None
    regenerate_from: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    seed: int | None = Field(default=None, ge=0, lt=2**31)
    tool_choice: str | None = Field(default=None, max_length=64, description=(
        "Which tool the answer must call first: the name of one of the conversation's tools, `required` "
        "(any of them) or `none`; default `auto` (the model decides). Later answers of the turn decide themselves."))
    compare: bool = Field(default=False, description=(
        "The client can show two answers side by side: while a canary runs, some turns then answer "
        "with two (stable and canary, in random order) and ask which is better."))


def user_out(u: User) -> dict:
    return UserOut.model_validate(u, from_attributes=True).model_dump(mode="json")


def key_out(k: ApiKey, secret: str | None = None) -> dict:
    return {"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": k.created_at.isoformat(),
            "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            "revoked": k.revoked_at is not None, **({"key": secret} if secret else {})}


def feedback_out(f: Feedback | None) -> dict | None:
    if f is None:
        return None
    return {"rating": "up" if f.rating > 0 else "down", "reasons": [r for r in f.reasons.split(",") if r],
            "comment": f.comment}


def attachment_out(a: Attachment) -> dict:
    return {"id": a.id, "mime": a.mime, "bytes": a.size_bytes, "width": a.width, "height": a.height,
            "url": f"/api/uploads/{a.id}"}


def message_out(m: Message, feedback: Feedback | None = None, voted: bool = False,
                attachments: list[Attachment] | None = None) -> dict:
    """A message as the app API shows it. The two answers of a side-by-side vote (`duel_id`) hide
    which version wrote them until the user has voted (`voted`). A user message lists its images."""
    hidden = m.duel_id is not None and not voted
    return {
        "id": m.id, "conversation_id": m.conversation_id, "parent_id": m.parent_id, "role": m.role,
        "content": m.content, "status": m.status, "model": None if hidden else m.model_version,
        "created_at": m.created_at.isoformat(), "finish_reason": m.finish_reason,
        "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
        "ttft_ms": m.ttft_ms, "latency_ms": m.latency_ms, "feedback": feedback_out(feedback),
        "duel_id": m.duel_id, "voted": voted if m.duel_id else None,
        "attachments": [attachment_out(a) for a in attachments or []],
        "tool_calls": json.loads(m.tool_calls) if m.tool_calls else None,
        **({"tool_call_id": m.tool_call_id, "tool": json.loads(m.tool_result or "{}")} if m.role == "tool" else {}),
    }


def conversation_out(c: Conversation) -> dict:
    return {"id": c.id, "title": c.title, "model": c.model, "system_prompt": c.system_prompt,
            "archived": c.archived, "current_leaf_id": c.current_leaf_id, "tools": json.loads(c.tools or "[]"),
            "created_at": c.created_at.isoformat(), "updated_at": c.updated_at.isoformat()}
