"""Error types: what went wrong, in words a user can act on, with the CLI exit code it maps to.

Exit codes (docs/architecture.md): 0 ok, 1 runtime failure, 2 bad usage/input. The server maps
each type to an HTTP status in server/errors.py; `param` and `code` fill OpenAI's error fields.
Domain operations (accounts, conversations, feedback) raise these, never HTTP errors, so the CLI
and the routers share them.
"""


class ChatloopError(Exception):
    """A failure the user can act on; the message is shown as one line."""

    exit_code = 1

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


class UsageError(ChatloopError):
    """Bad input from the user: a wrong model reference, invalid parameters, a corrupt file."""

    exit_code = 2


class ModelRefError(UsageError):
    """A model reference that cannot be resolved or loaded."""


class ContextTooLongError(UsageError):
    """A prompt that cannot fit in the model's context even after dropping old turns."""


class TooLargeError(UsageError):
    """Input over a size limit (an image's bytes or pixels)."""


class UnsupportedMediaError(UsageError):
    """An upload of a media type that is not accepted (not an image)."""


class NotFoundError(UsageError):
    """No such object, or one that belongs to somebody else (the two are indistinguishable)."""


class ConflictError(UsageError):
    """The object already exists (an email that is taken, say)."""


class PermissionDenied(ChatloopError):
    """The caller may not do this (a disabled account, a non-administrator, sign-up closed)."""


class AuthenticationFailed(ChatloopError):
    """Wrong credentials, or none."""


class StorageFull(ChatloopError):
    """A write failed because the filesystem is full (or over quota); freeing space and retrying helps."""


class TimedOut(ChatloopError):
    """Work on the request's input took longer than its budget (reading an image's text)."""


class DatabaseUnavailable(ChatloopError):
    """The database cannot be reached (restarting, down, out of connections); retry shortly."""


class EngineOverloaded(ChatloopError):
    """The engine's waiting queue is full; the caller should retry later."""


class RemoteEngineError(ChatloopError):
    """A remote engine (`serve --backend openai:URL`) is unreachable, refused our key or failed."""
