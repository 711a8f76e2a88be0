"""PostgreSQL URLs: recognised, and checked by connecting once before anything opens on them.

A pool given a URL that does not work waits its whole timeout, retrying, and then fails with an
error that names neither the setting nor the fault. One plain connection fails at once (a closed
port, a host name that does not resolve, a database that does not exist, a refused user), and its
failure can be told apart; so every pool, and every command, connects once first.

libpq's own words are not passed on: they can quote a piece of the URL, password included (one
with an unescaped space, say). An error names only the setting, host, port, database and user.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from memvault.errors import Invalid, MemvaultError, Unavailable

URL_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT = 5  # seconds for a server to answer at all; refusals come at once
# What libpq says (lower-cased) when it reached no server, and how the error says it.
_UNREACHED = (
    ("connection refused", "connection refused"),
    ("timeout expired", "no answer in time"),
    ("failed to resolve host", "host name not found"),
    ("could not translate host name", "host name not found"),
    ("no route to host", "no route to host"),
)
_REFUSED_LOGIN = ("password authentication failed", "no password supplied", "pg_hba.conf",
                  "authentication failed", "role \"")  # fmt: skip


def is_postgres_url(url: str | None) -> bool:
    return url is not None and url.startswith(URL_SCHEMES)


def check_url(url: str, field: str) -> None:
    """Connect once to the PostgreSQL `url`, the setting or option `field`: a mistake in it,
    or a server that is not there, raises `Invalid` or `Unavailable` naming `field` and the
    part at fault, within `CONNECT_TIMEOUT` seconds at most, and leaves no connection open."""
    if not is_postgres_url(url):
        raise Invalid(field, "must start with postgresql://")
    parts = _url_parts(url, field)
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
    except psycopg.Error as exc:
        raise _connect_failure(str(exc).lower(), parts, field) from None


def _url_parts(url: str, field: str) -> dict[str, str]:
    """The URL's host, port, database and user, as libpq reads them (defaults filled in)."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise Invalid(field, "is not a PostgreSQL URL: percent-encode spaces and other special "
                      "characters in the user name and password (@ as %40), and check the "
                      "query parameters") from None  # fmt: skip
    host, ports = str(given.get("host") or "localhost"), str(given.get("port") or "5432")
    if "@" in host:  # libpq ends the user name and password at the first @
        raise Invalid(field, "an @ in the user name or password must be written %40")
    if not all(port.isdigit() for port in ports.split(",")):
        raise Invalid(field, "the port must be a number")
    return {"where": f"{host}:{ports}",
            "database": str(given.get("dbname") or given.get("user") or "(default)"),
            "user": str(given.get("user") or "(default)")}  # fmt: skip


def _connect_failure(said: str, parts: dict[str, str], field: str) -> MemvaultError:
    """The error for what libpq `said` (lower-cased): `Invalid` for a URL that cannot work as
    written, `Unavailable` for a server that may yet answer."""
    where = parts["where"]
    if 'database "' in said and "does not exist" in said:
        return Invalid(field, f"the server at {where} has no database {parts['database']!r}")
    if any(words in said for words in _REFUSED_LOGIN):
        return Invalid(field, f"the server at {where} refused user {parts['user']!r}: check "
                       "the user name and password")  # fmt: skip
    if "connection is bad: invalid" in said:
        return Invalid(field, "a connection option in the URL has a value libpq does not accept")
    reason = next((f" ({ours})" for words, ours in _UNREACHED if words in said), "")
    message = f"{field}: could not reach a PostgreSQL server at {where}{reason}"
    return Unavailable(message, details={"field": field})
