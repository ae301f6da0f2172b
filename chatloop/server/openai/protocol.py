"""Pydantic models for /v1/chat/completions, fields ordered like OpenAI's API reference.

Unknown fields are rejected (400 naming the field) rather than silently ignored, so a client
never believes a parameter took effect when it did not. Tools are checked as OpenAI checks them:
a function name matches ^[a-zA-Z0-9_-]{1,64}$ and is unique, its parameters are a valid JSON
Schema of type object, and a `tool` message answers (by `tool_call_id`) a call an earlier
assistant message made. Each failure is a 400 whose `param` is the field's path.
"""

import time
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


PARTS = {"text": "text", "image_url": "image_url"}  # the content parts we take, and the field each needs


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _parts(cls, v):
        """Text and image_url parts only (`image` is the app's own form of a stored upload, never a
        client's; OpenAI's audio and file parts are not supported)."""
        for j, part in enumerate(v if isinstance(v, list) else ()):
            kind = part.get("type")
            if kind not in PARTS:
                raise ValueError(f"content[{j}] has type {kind!r}; supported content parts: "
                                 f"{', '.join(repr(k) for k in PARTS)}")
            if PARTS[kind] not in part:
                raise ValueError(f"content[{j}] of type {kind!r} needs its {PARTS[kind]!r} field")
        return v

    @model_validator(mode="after")
    def _content(self):
        """As at OpenAI: only an assistant message (one that makes tool calls) may leave content out."""
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content (a string or a list of content parts)")
        return self


class StreamOptions(Strict):
    include_usage: bool = False


class JSONSchemaFormat(Strict):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format json_schema needs json_schema.schema")
        return self


class FunctionDefinition(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, v):
        if not v:  # absent or {}: a function without parameters
            return v
        if v.get("type") != "object":
            raise ValueError(f"parameters must be a JSON Schema of type 'object', got type {v.get('type')!r}")
        try:
            jsonschema.validators.validator_for(v).check_schema(v)
        except jsonschema.SchemaError as e:
            where = "/".join(str(p) for p in e.path)
            raise ValueError(f"parameters is not a valid JSON Schema{' at ' + where if where else ''}: "
                             f"{e.message}") from None
        return v


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: dict[str, str]


class ChatCompletionRequest(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"model": "default", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}]})

    messages: list[ChatMessage] = Field(min_length=1)
    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(
        default=None, description="Token id (as a string) -> a bias from -100 to 100 added to its logit.")
    logprobs: bool | None = False
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1, description="Deprecated alias of max_completion_tokens.")
    metadata: dict[str, str] | None = None
    n: int | None = Field(default=1, ge=1, le=8)
    parallel_tool_calls: bool | None = None
    presence_penalty: float | None = Field(default=0.0, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    store: bool | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=1.0, ge=0.0, le=2.0)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: list[Tool] | None = Field(default=None, max_length=64)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    top_p: float | None = Field(default=1.0, gt=0.0, le=1.0)
    user: str | None = None

    @field_validator("messages")
    @classmethod
    def _tool_results_answer_calls(cls, v):
        called: set[str] = set()
        for i, m in enumerate(v):
            if m.role == "assistant":
                called.update(c["id"] for c in m.tool_calls or [] if isinstance(c.get("id"), str))
            if m.role != "tool":
                continue
            if not m.tool_call_id:
                raise ValueError(f"messages[{i}] has role 'tool' but no tool_call_id")
            if m.tool_call_id not in called:
                raise ValueError(f"messages[{i}] with role 'tool' must answer a call of an earlier assistant message's "
                                 f"tool_calls; no call has id {m.tool_call_id!r}")
        return v

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, v):
        names = [t.function.name for t in v or []]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"function names must be unique; given more than once: {', '.join(twice)}")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4:
            raise ValueError(f"at most 4 stop sequences, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        """Keys are token ids (SamplingParams checks the biases' range, for every way in)."""
        for token in v or {}:
            if not (token.isascii() and token.isdigit() and len(token) <= 12):
                raise ValueError(f"logit_bias keys are token ids, got {token!r}")
        return v

    @field_validator("top_logprobs", "stream_options")
    @classmethod
    def _needs_its_switch(cls, v, info):
        """top_logprobs only with logprobs, stream_options only with stream (as OpenAI answers)."""
        switch = {"top_logprobs": "logprobs", "stream_options": "stream"}[info.field_name]
        if v is not None and not info.data.get(switch):
            raise ValueError(f"{info.field_name} is only allowed when {switch} is true")
        return v


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache instead of prefilled


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as in OpenAI's API


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A streamed call: its first delta carries id, type and name, the next its arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "chatloop"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
