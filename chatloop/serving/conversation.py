"""A conversation turn (the app API, the web UI): a user message in, a stored, streamed answer out.

    turn = await start_turn(chat, db, user_id, conv_id, TurnOptions(content="Hi"))
    async for chunk in chat.drive(turn.run, sink, receive): ...     # the sink calls turn.finish()

The branch is read in one short transaction, rendered and planned by the chat service with none
open (its oldest turns dropped to fit the context), submitted, and only then are the user message
and the `streaming` answer written, in a second transaction — before the first event reaches the
client. A request that cannot be served (bad input, unknown model, overload) leaves no rows.
`finish` records the outcome: `complete`, `stopped` (the client left: the partial text is kept)
or `error`, with the usage and timings of the run. An outcome that cannot be written because the
database is unavailable (PostgreSQL restarting) is still streamed to the client, and written in the
background as soon as the database is back (retried for `SAVE_RETRY_SECONDS`); a server that stops
meanwhile leaves the answer `streaming`, which its next start marks `interrupted`.

While a canary runs, a share of web-UI turns (`CHATLOOP_VOTE_SHARE`) is a side-by-side vote: two
answers to the same message, one from stable and one from canary, in random order, written as
siblings with one `duel_id`; the user's pick becomes a comparison of kind `vote`.
"""

import asyncio
import logging
import random
from dataclasses import dataclass

from chatloop.engine.scheduler import GenerationResult
from chatloop.errors import DatabaseUnavailable, UsageError
from chatloop.registry.releases import CANARY, STABLE
from chatloop.store.conversations import (
    UNSET, TurnContext, commit_turn, finish_answer, read_turn, record_outcome,
)
from chatloop.store.db import Database
from chatloop.store.models import Message, new_id
from chatloop.serving.images import Image
from chatloop.serving.plan import ChatRequest
from chatloop.serving.run import Run
from chatloop.serving.service import ChatService

STATUS = {"cancelled": "stopped", "error": "error"}  # any other finish reason: complete
SAVE_RETRY_SECONDS = 300.0
log = logging.getLogger(__name__)
_saving: set[asyncio.Task] = set()  # answers waiting for the database to come back


async def _save_when_back(write, message_id: str) -> None:
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + SAVE_RETRY_SECONDS, 0.5
    while True:
        await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(write)
        except DatabaseUnavailable:
            if loop.time() > deadline:
                log.error("answer %s could not be saved within %.0f s; it stays `streaming` until the next "
                          "start marks it interrupted", message_id, SAVE_RETRY_SECONDS)
                return
            delay = min(delay * 2, 5.0)
            continue
        log.warning("answer %s saved now that the database is back", message_id)
        return


@dataclass
class TurnOptions:
    content: str | None = None  # a new user message ...
    attachments: list[str] | None = None  # ... with these uploads (their ids), shown before its text
    regenerate_from: str | None = None  # ... or another answer to this user message
    parent_id: object = UNSET  # where the new message goes (default: the branch being shown)
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int | None = None
    seed: int | None = None
    compare: bool = False  # the client can show two answers side by side for a vote
    continue_from: str | None = None  # ... or the next answer after this tool result (the tool loop)
    tool_choice: str | None = None  # auto (None) | none | required | one tool's name: the first answer's calls


@dataclass
class Turn:
    db: Database
    run: Run
    context: TurnContext
    user_message: Message | None
    answers: list[Message]  # one per choice of the run; two (in random order) for a side-by-side vote

    @property
    def answer(self) -> Message:
        return self.answers[0]

    @property
    def duel(self) -> bool:
        return len(self.answers) > 1

    async def finish(self, index: int, result: GenerationResult | None, partial_text: str) -> Message:
        """Record answer `index`'s outcome (result None: it never finished, keep what was streamed)."""
        if result is None:
            fields = dict(text=partial_text, status="stopped", finish_reason="cancelled")
        else:
            content, calls = self.run.part_of[index].plan.tools.extract(result.text)
            fields = dict(
                text=content or "", status=STATUS.get(result.finish_reason, "complete"),
                finish_reason="tool_calls" if calls else result.finish_reason, error=result.error,
                tool_calls=[c.as_openai() for c in calls] or None,
                usage=dict(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                           ttft_ms=None if result.ttft_s is None else result.ttft_s * 1000,
                           latency_ms=result.latency_s * 1000))

        def write() -> Message:
            with self.db.session() as s:
                return finish_answer(s, self.answers[index].id, title=self.context.needs_title, **fields)

        try:
            return await asyncio.to_thread(write)
        except DatabaseUnavailable:
            answer = self.answers[index]
            log.warning("the database is unavailable: answer %s will be saved when it is back", answer.id)
            task = asyncio.create_task(_save_when_back(write, answer.id))
            _saving.add(task)
            task.add_done_callback(_saving.discard)
            return record_outcome(answer, **fields)  # as it will be stored


def _duel(chat: ChatService, context: TurnContext, options: TurnOptions, vote_share: float) -> bool:
    """Whether this turn shows stable and canary side by side: a new message from a client that can
    show them, in a conversation following release channels while a canary runs, for the share of
    turns the server is configured to ask (never with tools: a vote compares answers, not tool chains)."""
    return (options.compare and options.content is not None and vote_share > 0 and not context.tools
            and chat.canary_running(context.model) and random.random() < vote_share)


def with_images(message: dict) -> dict:
    """A stored message as the chat service takes it: its images (uploads) as image parts, then its text."""
    stored = message.get("attachments")
    if not stored:
        return message
    parts = [{"type": "image", "image": Image(a.data, a.mime, a.sha256, a.width, a.height)} for a in stored]
    return {"role": message["role"], "content": parts + [{"type": "text", "text": message["content"]}]}


def offered_tools(toolbox, names) -> list[dict] | None:
    """The OpenAI definitions of the conversation's tools that the server has (None: no tools)."""
    if toolbox is None or not names:
        return None
    specs = [toolbox.spec(name) for name in names]
    return [spec.openai() for spec in specs if spec is not None] or None


async def start_turn(chat: ChatService, db: Database, user_id: str, conv_id: str, options: TurnOptions,
                     vote_share: float = 0.0, toolbox=None) -> Turn:
    def read() -> TurnContext:
        with db.session() as s:
            return read_turn(s, user_id, conv_id, options.content, options.regenerate_from, options.parent_id,
                             options.attachments, options.continue_from)

    context = await asyncio.to_thread(read)
    tools = offered_tools(toolbox, context.tools)
    if options.tool_choice not in (None, "auto", "none") and tools is None:
        raise UsageError("tool_choice needs a conversation with tools (PATCH its `tools`)", param="tool_choice")
    request = ChatRequest(messages=[with_images(m) for m in context.messages], max_tokens=options.max_tokens,
                          temperature=options.temperature, top_p=options.top_p, seed=options.seed,
                          tools=tools, tool_choice=options.tool_choice, truncate=True)
    channel = context.channel
    if channel is None and chat.follows_channels(context.model):
        # a new conversation joins the canary for its share; one that predates the canary stays stable
        channel = chat.assign_channel(context.model) if context.is_new else STABLE
    if _duel(chat, context, options, vote_share):
        pair = [CANARY, STABLE]
        random.shuffle(pair)  # the order on screen says nothing about which is which
        run = await chat.start_pair(context.model, request, pair)
    else:
        run = await chat.start(context.model, request, channel=channel)
    duel_id = new_id() if len(run.parts) > 1 else None
    answer_fields = [dict(model_version=part.lease.engine.model_id, temperature=options.temperature,
                          top_p=options.top_p, max_tokens=part.plan.max_tokens, seed=options.seed,
                          context_dropped=part.plan.dropped, duel_id=duel_id) for part in run.parts]

    def commit() -> tuple[Message | None, list[Message]]:
        with db.session() as s:
            return commit_turn(s, user_id, context, answer_fields, channel=channel)

    try:
        user_message, answers = await asyncio.to_thread(commit)
    except BaseException:
        run.cancel()
        run.release()
        raise
    return Turn(db, run, context, user_message, answers)
