"""Typed exceptions.

User mistakes (bad flags, bad request fields, missing model files) raise a
subclass of :class:`PonderError` with a one-line message.  The CLI prints the
message and exits 2; the gateway turns it into an OpenAI-style error body.
Nothing here should ever surface to a user as a stack trace.
"""

from __future__ import annotations


class PonderError(Exception):
    """Base class of every error ponder raises on purpose."""

    #: HTTP status the gateway answers with.
    status: int = 400
    #: OpenAI-style ``error.type``.
    type: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_openai(self) -> dict:
        """The body an OpenAI client expects: ``{"error": {...}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": None,
            }
        }


class InvalidRequest(PonderError):
    """A request field (or CLI flag) has a bad value."""


class BudgetError(InvalidRequest):
    """A thinking budget is negative, inverted or absurdly large."""


class ConfigError(PonderError):
    """The YAML config is invalid; the message names the key."""

    type = "config_error"


class ModelNotFound(PonderError):
    """A model file or model package is missing."""

    status = 404
    type = "model_not_found"


class ContextOverflow(InvalidRequest):
    """The prompt does not fit the model's context window."""


class BackendError(PonderError):
    """An engine failed (upstream 5xx, refused connection, engine crash)."""

    status = 502
    type = "upstream_error"


class UpstreamTimeout(BackendError):
    """An upstream engine did not answer in time."""

    status = 504
    type = "upstream_timeout"


class Overloaded(PonderError):
    """The gateway's queue is full; the client should retry later."""

    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Cancelled(PonderError):
    """The client went away; generation stopped."""

    status = 499
    type = "cancelled"
