"""A conversation turn (the app API, the web UI): a user message in, a stored, streamed answer out.

    turn = await start_turn(chat, db, user_id, conv_id, TurnOptions(content="Hi"))
    async for chunk in chat.drive(turn.run, sink, receive): ...     # the sink calls turn.finish()

The branch is read in one short transaction, rendered and planned by the chat service with none
open (its oldest turns dropped to fit the context), submitted, and only then are the user message
and the `streaming` answer written, in a second transaction — before the first event reaches the
client. A request that cannot be served (bad input, unknown model, overload) leaves no rows.
`finish` records the outcome: `complete`, `stopped` (the client left: the partial text is kept)
or `error`, with the usage and timings of the run.
"""

import asyncio
from dataclasses import dataclass

from chatloop.engine.scheduler import GenerationResult
from chatloop.store.conversations import UNSET, TurnContext, commit_turn, finish_answer, read_turn
from chatloop.store.db import Database
from chatloop.store.models import Message
from chatloop.serving.plan import ChatRequest
from chatloop.serving.run import Run
from chatloop.serving.service import ChatService

STATUS = {"cancelled": "stopped", "error": "error"}  # any other finish reason: complete


@dataclass
class TurnOptions:
    content: str | None = None  # a new user message ...
    regenerate_from: str | None = None  # ... or another answer to this user message
    parent_id: object = UNSET  # where the new message goes (default: the branch being shown)
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int | None = None
    seed: int | None = None


@dataclass
class Turn:
    db: Database
    run: Run
    context: TurnContext
    user_message: Message | None
    answer: Message

    async def finish(self, result: GenerationResult | None, partial_text: str) -> Message:
        """Record the answer's outcome (result None: it never finished, keep what was streamed)."""
        if result is None:
            fields = dict(text=partial_text, status="stopped", finish_reason="cancelled")
        else:
            content, calls = self.run.plan.tools.extract(result.text)
            fields = dict(
                text=content or "", status=STATUS.get(result.finish_reason, "complete"),
                finish_reason="tool_calls" if calls else result.finish_reason, error=result.error,
                tool_calls=[c.as_openai() for c in calls] or None,
                usage=dict(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                           ttft_ms=None if result.ttft_s is None else result.ttft_s * 1000,
                           latency_ms=result.latency_s * 1000))

        def write() -> Message:
            with self.db.session() as s:
                return finish_answer(s, self.answer.id, title=self.context.needs_title, **fields)

        return await asyncio.to_thread(write)


async def start_turn(chat: ChatService, db: Database, user_id: str, conv_id: str, options: TurnOptions) -> Turn:
    def read() -> TurnContext:
        with db.session() as s:
            return read_turn(s, user_id, conv_id, options.content, options.regenerate_from, options.parent_id)

    context = await asyncio.to_thread(read)
    request = ChatRequest(messages=context.messages, max_tokens=options.max_tokens, temperature=options.temperature,
                          top_p=options.top_p, seed=options.seed, truncate=True)
    run = await chat.start(context.model, request)
    answer_fields = dict(model_version=run.model_id, temperature=options.temperature, top_p=options.top_p,
                         max_tokens=run.plan.max_tokens, seed=options.seed, context_dropped=run.plan.dropped)

    def commit() -> tuple[Message | None, Message]:
        with db.session() as s:
            return commit_turn(s, user_id, context, answer_fields)

    try:
        user_message, answer = await asyncio.to_thread(commit)
    except BaseException:
        run.cancel()
        run.lease.release()
        raise
    return Turn(db, run, context, user_message, answer)
