"""Prompts for vision-language models: a conversation with images -> token ids + pixel tensors.

    rendered = render_vision_prompt(processor, messages, max_tokens=..., tools=...)
    rendered.ids, rendered.pixels        # pixels: what the engine's vision encoder reads (None: no image)

A vision-language model (SmolVLM, the Idefics3 architecture) reads an image as a run of image
tokens in its prompt whose embeddings the engine replaces by the image's features. The model's
processor does both halves of the rendering: its chat template writes `<image>` where a content
part holds an image, and its call expands each `<image>` into the model's image tokens (how many
depends on the image's size when the processor splits it into tiles) and turns the images into
pixel tensors. Images arrive as `{"type": "image", "image": IMAGE}` parts (IMAGE has `open()`,
giving the decoded PIL image: serving/images.py validates them).

Text is validated as `chat_format` validates it for a text-only model; these templates know no
tools, so tools are described in the system prompt and past calls written into the content
(`tool_calls.py`). Each image part stands in the text as a marker no client can guess, which is
split back into an image part after that preparation. Dropping the oldest turns to fit the context
drops their images too (the budget counts image tokens).

Such templates read every message's content as a list of parts; `parts_template` wraps one so
that a plain string content is read as one text part, so the text-only paths (chat, generate,
evals) render a vision-language model's prompts correctly too.
"""

import re
import secrets
from dataclasses import dataclass
from typing import Any

from chatloop.errors import UsageError
from chatloop.models.chat_format import RenderedPrompt, _fit, normalize_messages
from chatloop.models.tool_calls import describe_tools

# Jinja prelude: messages whose content is a string get it as one text part.
_STRING_AS_PARTS = (
    "{%- set _parts = namespace(messages=[]) -%}"
    "{%- for m in messages -%}"
    "{%- if m['content'] is string -%}"
    "{%- set _parts.messages = _parts.messages + [dict(m, content=[{'type': 'text', 'text': m['content']}])] -%}"
    "{%- else -%}{%- set _parts.messages = _parts.messages + [m] -%}{%- endif -%}"
    "{%- endfor -%}{%- set messages = _parts.messages -%}"
)


def parts_template(template: str | None) -> str | None:
    """`template` reading a string content as one text part (idempotent)."""
    if not template or template.startswith(_STRING_AS_PARTS):
        return template
    return _STRING_AS_PARTS + template


@dataclass(frozen=True, eq=False)
class Pixels:
    """A prompt's images as the model's processor prepared them (e.g. pixel_values and
    pixel_attention_mask for Idefics3): the keyword arguments of the model's get_image_features."""

    tensors: dict[str, Any]
    count: int  # images


@dataclass
class VisionPrompt(RenderedPrompt):
    pixels: Pixels | None = None


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "image"


def render_vision_prompt(
    processor, messages: Any, *, max_tokens: int | None = None, tools: list[dict] | None = None
) -> VisionPrompt:
    """The prompt for the model's next answer with its images, in at most `max_tokens` tokens."""
    if not isinstance(messages, list):
        raise UsageError("messages must be a non-empty list")
    nonce = secrets.token_hex(8)
    images: list[Any] = []
    marked = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(_is_image(p) for p in content):
            parts = []
            for p in content:
                if _is_image(p):
                    parts.append({"type": "text", "text": f"<image:{nonce}:{len(images)}>"})
                    images.append(p["image"])
                else:
                    parts.append(p)
            m = {**m, "content": parts}
        marked.append(m)
    marker = re.compile(rf"<image:{nonce}:(\d+)>")
    opened: dict[int, Any] = {}  # decoded once, whichever turns a render keeps

    def render(ms: list[dict]) -> VisionPrompt:
        shown, parted = [], []
        for m in ms:
            parts, pos, text = [], 0, m["content"]
            for match in marker.finditer(text):
                if match.start() > pos:
                    parts.append({"type": "text", "text": text[pos:match.start()]})
                parts.append({"type": "image"})
                shown.append(int(match.group(1)))
                pos = match.end()
            if pos < len(text) or not parts:
                parts.append({"type": "text", "text": text[pos:]})
            parted.append({"role": m["role"], "content": parts})
        try:
            prompt = processor.apply_chat_template(parted, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # jinja raises its own errors for conversations a template rejects
            raise UsageError(f"the model's chat template rejected the conversation: {e}") from e
        for i in shown:
            if i not in opened:
                opened[i] = images[i].open()
        try:
            out = processor(text=[prompt], images=[[opened[i] for i in shown]] if shown else None,
                            add_special_tokens=False, return_tensors="pt")
        except ValueError as e:  # e.g. an image too small for the model's patches
            raise UsageError(f"the model's processor rejected the images: {e}") from e
        ids = out["input_ids"][0].tolist()
        tensors = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask")}
        pixels = Pixels(tensors, len(shown)) if shown else None
        return VisionPrompt(ids=ids, text=prompt, dropped=0, pixels=pixels)

    prepared = normalize_messages(marked)
    return _fit(render, describe_tools(prepared, tools) if tools else prepared, max_tokens)
