"""Error types that carry the CLI exit code and map to clear user-facing messages.

Exit codes (DESIGN.md): 0 ok, 1 runtime failure, 2 bad usage/input.
"""


class ChatloopError(Exception):
    """A failure the user can act on; the message is shown as one line."""

    exit_code = 1


class UsageError(ChatloopError):
    """Bad input from the user: a wrong model reference, invalid parameters, a corrupt file."""

    exit_code = 2


class ModelRefError(UsageError):
    """A model reference that cannot be resolved or loaded."""


class ContextTooLongError(UsageError):
    """A prompt that cannot fit in the model's context even after dropping old turns."""


class EngineOverloaded(ChatloopError):
    """The engine's waiting queue is full; the caller should retry later."""
