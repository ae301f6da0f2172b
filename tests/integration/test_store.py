"""The store layer on SQLite and PostgreSQL: an answer keeps what its model saw, ownership hides
other users' objects, and the training-data query honours "improve the model for everyone"."""

from datetime import UTC, datetime, timedelta

import pytest

from chatloop.errors import NotFoundError
from chatloop.store import accounts, conversations as convs, feedback
from chatloop.store.db import Database
from chatloop.store.models import Conversation
from chatloop.store.training_data import training_feedback


@pytest.fixture()
def db(database):
    return database


def answered_turn(db: Database, user_id: str, conv_id: str, question: str, answer: str, version: str,
                  regenerate_from: str | None = None, tool_calls: list[dict] | None = None):
    """One turn as the chat service writes it: read, commit `streaming`, finish."""
    with db.session() as s:
        ctx = convs.read_turn(s, user_id, conv_id, None if regenerate_from else question, regenerate_from)
    with db.session() as s:
        user_msg, (msg,) = convs.commit_turn(s, user_id, ctx, [{"model_version": version, "temperature": 0.7}])
    with db.session() as s:
        convs.finish_answer(s, msg.id, text=answer, status="complete", finish_reason="stop", tool_calls=tool_calls,
                            usage={"prompt_tokens": 10, "completion_tokens": 3}, title=True)
    return ctx, user_msg, msg


def test_an_answer_records_what_the_model_saw(db):
    with db.session() as s:
        user = accounts.create_user(s, "saw@example.com", "long enough")
        accounts.update_profile(s, user.id, {"custom_instructions": "Answer briefly."})
        conv = Conversation(user_id=user.id, system_prompt="You are a pirate.")
        s.add(conv)
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ctx, _, answer = answered_turn(db, user.id, conv.id, "Hello", "Arr!", "m:1", tool_calls=[call])
    assert ctx.messages[0] == {"role": "system", "content": "You are a pirate."}  # its own prompt wins
    with db.session() as s:
        accounts.update_profile(s, user.id, {"custom_instructions": "Answer at length."})  # later changes...
        stored = convs.own_message(s, user.id, answer.id)[0]
        # ... do not rewrite what the answer was given
        assert (stored.system_prompt, stored.custom_instructions) == ("You are a pirate.", "Answer briefly.")
        assert stored.model_version == "m:1" and stored.status == "complete" and stored.prompt_tokens == 10
        assert stored.tool_calls and '"call_1"' in stored.tool_calls
        assert s.get(Conversation, conv.id).title == "Hello"


def test_another_users_objects_are_not_found(db):
    with db.session() as s:
        alice = accounts.create_user(s, "alice@example.com", "long enough")
        bob = accounts.create_user(s, "bob@example.com", "long enough")
        conv = Conversation(user_id=alice.id)
        s.add(conv)
    _, _, answer = answered_turn(db, alice.id, conv.id, "Hi", "Hello", "m:1")
    with db.session() as s:
        with pytest.raises(NotFoundError):
            convs.own_conversation(s, bob.id, conv.id)
        with pytest.raises(NotFoundError):
            feedback.rate(s, bob.id, answer.id, 1, [], "")
        with pytest.raises(NotFoundError):
            convs.read_turn(s, bob.id, conv.id, "sneaky", None)


def test_training_feedback_honours_the_opt_out(db):
    with db.session() as s:
        keen = accounts.create_user(s, "keen@example.com", "long enough")
        shy = accounts.create_user(s, "shy@example.com", "long enough")
        accounts.update_profile(s, shy.id, {"train_opt_in": False})
        convs_of = {u.id: Conversation(user_id=u.id) for u in (keen, shy)}
        s.add_all(convs_of.values())
    for user in (keen, shy):
        conv_id = convs_of[user.id].id
        _, question, first = answered_turn(db, user.id, conv_id, "Capital of France?", "Paris.", "m:1")
        _, _, second = answered_turn(db, user.id, conv_id, "", "Lyon.", "m:2", regenerate_from=question.id)
        with db.session() as s:
            feedback.rate(s, user.id, first.id, 1, ["accurate"], "")
            feedback.compare(s, user.id, first.id, second.id)
            feedback.correct(s, user.id, second.id, "Paris, not Lyon.")
    with db.session() as s:
        data = training_feedback(s)
        assert [(f.user_id, m.content, m.model_version) for f, m in data.ratings] == [(keen.id, "Paris.", "m:1")]
        assert [(c.user_id, a.content, b.content) for c, a, b in data.comparisons] == [(keen.id, "Paris.", "Lyon.")]
        assert [(c.content, m.content) for c, m in data.corrections] == [("Paris, not Lyon.", "Lyon.")]
        assert all(c.user_id == keen.id for c, _ in data.corrections)
        later = training_feedback(s, since=datetime.now(UTC) + timedelta(minutes=1))
        assert not (later.ratings or later.comparisons or later.corrections)
        accounts.update_profile(s, keen.id, {"train_opt_in": False})  # opting out withdraws the past too
    with db.session() as s:
        data = training_feedback(s)
        assert not (data.ratings or data.comparisons or data.corrections)
