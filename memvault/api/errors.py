"""One JSON error envelope for every failure: `{"error": {"code", "message", "details"}}`.

Each `MemvaultError` class maps to one status. Validation errors name fields, never echo the
value (it may be user content). Anything unexpected becomes a bare 500: no message, no trace.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from memvault import errors

STATUS: dict[type[errors.MemvaultError], int] = {
    errors.Invalid: 422,
    errors.BadRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooLarge: 413,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
    errors.IntegrityError: 500,
    errors.WrongMasterKey: 500,
    errors.LlmUnreachable: 502,
    errors.LlmNotConfigured: 503,
}
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "too_large", 429: "rate_limited", 503: "unavailable",
}  # fmt: skip
SERVER_FAULTS = (errors.IntegrityError, errors.WrongMasterKey)
RETRYABLE = (errors.RateLimited, errors.Unavailable)  # answered with a Retry-After header


def envelope(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(exc: errors.MemvaultError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_response(exc: errors.MemvaultError) -> JSONResponse:
    status = status_of(exc)
    if isinstance(exc, SERVER_FAULTS):
        # The details of a failed decryption help an attacker more than a client.
        return envelope(status, exc.code, "the server could not read stored data")
    response = envelope(status, exc.code, exc.message, exc.details)
    if isinstance(exc, RETRYABLE):
        response.headers["Retry-After"] = str(exc.details.get("retry_after", 1))
    return response


def internal_error() -> JSONResponse:
    return envelope(500, "internal", "internal server error")


def _field(loc: tuple[Any, ...]) -> str:
    """`("body", "turns", 0, "role")` becomes `turns[0].role`; the location kind is dropped."""
    parts = list(loc[1:] if loc and loc[0] in {"body", "query", "path", "header"} else loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or str(loc[0] if loc else "body")


async def _on_memvault_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.MemvaultError)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [{"field": _field(tuple(e["loc"])), "problem": e["msg"]} for e in exc.errors()]
    first = fields[0]["field"] if fields else "body"
    message = f"{first}: {fields[0]['problem']}" if fields else "invalid request"
    return envelope(422, errors.Invalid.code, message, {"field": first, "fields": fields})


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    return envelope(exc.status_code, code, str(exc.detail), {})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.MemvaultError, _on_memvault_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
