"""Typed exceptions.

User mistakes (bad flags, bad request fields, missing model files) raise a
subclass of :class:`PonderError` with a one-line message.  The CLI prints the
message and exits 2; the gateway turns it into an OpenAI-style error body.
Nothing here should ever surface to a user as a stack trace, and no message
carries an internal address or an upstream's raw reply (those go to the log).
"""

from __future__ import annotations


class PonderError(Exception):
    """Base class of every error ponder raises on purpose."""

    #: HTTP status the gateway answers with.
    status: int = 400
    #: OpenAI-style ``error.type``.
    type: str = "invalid_request_error"
    #: OpenAI-style ``error.code``
    code: str | None = None
    #: a retry of the same call may succeed (connection refused or reset before any byte)
    retryable: bool = False

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_openai(self) -> dict:
        """The body an OpenAI client expects: ``{"error": {...}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {}

    def to_anthropic(self) -> dict:
        """The body an Anthropic client expects: ``{"type": "error", "error": {"type", "message"}}``."""
        return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(self.status, "api_error"),
                                           "message": self.message}}


#: Anthropic's error types by HTTP status
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                   502: "api_error", 503: "overloaded_error", 504: "api_error", 529: "overloaded_error"}


class InvalidRequest(PonderError):
    """A request field (or CLI flag) has a bad value."""


class BudgetError(InvalidRequest):
    """A thinking budget is negative, inverted or absurdly large."""


class ContextOverflow(InvalidRequest):
    """The prompt (or the request's worst case) does not fit the model's context window."""

    code = "context_length_exceeded"


class PayloadTooLarge(PonderError):
    status = 413
    code = "request_too_large"


class NotFound(PonderError):
    status = 404
    code = "not_found"


class ConfigError(PonderError):
    """The YAML config is invalid; the message names the key."""

    type = "config_error"


class ModelNotFound(PonderError):
    """A model file or model package is missing, or a request names an unknown model."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class AuthError(PonderError):
    """Missing or wrong API key."""

    status = 401
    code = "invalid_api_key"


class Forbidden(PonderError):
    """The key may not do what the request asks (a limit of its own)."""

    status = 403
    type = "permission_error"
    code = "limit_exceeded"


class Overloaded(PonderError):
    """The gateway, a quota or an upstream says: not now.  The client should retry later."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, param: str | None = None,
                 code: str | None = None, limit_headers: dict[str, str] | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after_s = retry_after_s
        self.limit_headers = limit_headers or {}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, int(-(-self.retry_after_s // 1)))), **self.limit_headers}


class BackendError(PonderError):
    """An engine failed (upstream 5xx, malformed reply, engine crash)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnreachable(BackendError):
    """Connecting to the upstream failed or the connection was reset before any byte came back."""

    code = "upstream_unreachable"
    retryable = True


class UpstreamTimeout(BackendError):
    """An upstream engine did not answer within its lane's ``timeout_s``."""

    status = 504
    type = "upstream_timeout"
    code = "upstream_timeout"


class ToolChoiceIgnored(BackendError):
    """``tool_choice`` forced a call and the answer holds none: an error, never a success."""

    code = "tool_choice_ignored"


class UpstreamRateLimited(Overloaded):
    """The upstream answered 429: passed on with its Retry-After."""

    code = "upstream_rate_limited"


class DeadlineExceeded(PonderError):
    """The request's own deadline (``deadline_s``) passed before anything could be answered."""

    status = 504
    type = "timeout"
    code = "deadline_exceeded"


class Cancelled(PonderError):
    """The client went away; generation stopped.  Only ever logged and accounted, never sent."""

    status = 499
    type = "cancelled"
    code = "client_closed_request"


class ShuttingDown(PonderError):
    status = 503
    type = "server_error"
    code = "shutting_down"


def internal_error() -> dict:
    return {"error": {"message": "internal error in ponder (see the server log)", "type": "server_error",
                      "param": None, "code": "internal_error"}}
