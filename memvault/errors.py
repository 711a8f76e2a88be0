"""One tree of errors for every face of memvault.

The API maps each class to one HTTP status and one JSON envelope, so callers of the library and
of the server see the same distinctions. Messages name the field or the object kind, never user
content or key material: errors end up in logs.
"""

from __future__ import annotations

from typing import Any


class MemvaultError(Exception):
    """Base of every error memvault raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class FieldError(MemvaultError):
    """An error about one field of the caller's input, which `field` (and `details["field"]`)
    names; the message reads "field: problem"."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", details={"field": field})
        self.field = field


class Invalid(FieldError):
    """The caller's input is malformed; `field` names what is wrong. Nothing was written."""

    code = "invalid"


class NotFound(MemvaultError):
    """The object does not exist, or not within the caller's scope (the two look the same)."""

    code = "not_found"


class Forbidden(MemvaultError):
    """The caller is known but may not do this."""

    code = "forbidden"


class Conflict(MemvaultError):
    """The write clashes with what is stored (a duplicate id, an import over existing rows)."""

    code = "conflict"


class IntegrityError(MemvaultError):
    """A ciphertext failed to open: tampered, truncated, moved to another row, or its key gone."""

    code = "integrity"


class UserKeyMissing(IntegrityError):
    """The user has no data key: crypto-shredded (deleted), perhaps since their rows were read,
    or never made. `Vault`'s reads tell the first apart (`user_reads`) and answer `NotFound`."""


class WrongMasterKey(MemvaultError):
    """The master key given does not open this keyring."""

    code = "wrong_master_key"


class Unauthorized(MemvaultError):
    """No credentials, or credentials the server does not accept (the API's 401)."""

    code = "unauthorized"


class TooLarge(MemvaultError):
    """The request body is over the server's size limit (the API's 413)."""

    code = "too_large"


class RateLimited(MemvaultError):
    """The caller's key has used up its requests for now (the API's 429)."""

    code = "rate_limited"


class Unavailable(MemvaultError):
    """The database cannot take the work now: unreachable, out of free connections, or a
    write that kept colliding with concurrent ones (the API's 503, with `Retry-After`).

    `details["retry_after"]` says when to try again. Unless `details["outcome"]` is
    `"unknown"` (the connection was lost during the commit itself), nothing was written.
    """

    code = "unavailable"


class BadRequest(FieldError):
    """The request lacks something it needs (the API's 400); `field` names it."""

    code = "bad_request"


class LlmNotConfigured(MemvaultError):
    """The chat proxy has no LLM to forward to: `MEMVAULT_LLM_URL` is unset (the API's 503).
    Unlike `Unavailable`, retrying will not help until the operator sets it."""

    code = "llm_not_configured"


class LlmUnreachable(MemvaultError):
    """The LLM gave no usable answer: connection refused, timed out, cut off, or a success
    that is not JSON (the API's 502). The message names the problem, never the URL (it may
    carry credentials)."""

    code = "llm_unreachable"
