"""Keep secrets out of everything simfarm writes: failure messages, records, logs, exceptions.

A server may echo what it was sent (some gateways put the ``Authorization`` header in a 401
body), and a ``base_url`` may carry ``user:secret@``. Backends register every secret they
send with :func:`register_secret`; :func:`redact` then removes registered secrets, any
``Authorization``/``Bearer`` value and URL credentials from a text. Every
:class:`~simfarm.types.Failure` message passes through :func:`redact` when it is built, so
a message cannot reach a result file, the cache or the terminal with a secret in it, and
:func:`redact_url` is what to print wherever a server address is shown.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

_MIN_SECRET_LENGTH = 4
"""Shorter values are not treated as secrets: replacing every "ab" would garble messages."""

_secrets: set[str] = set()
_lock = threading.Lock()

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
"""``scheme://user:password@host`` (or ``user@``): everything between ``//`` and ``@``."""
_AUTH_VALUE = re.compile(
    r"(?P<label>(?:authorization|proxy-authorization|api[-_]?key|x-api-key)"
    r"[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+",
    re.I,
)
"""``Authorization: Bearer X``, ``"authorization": "Basic X"``, ``api_key=X`` and alike."""
_BEARER = re.compile(r"(?P<label>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{6,}", re.I)


def register_secret(value: str | None) -> None:
    """Remember a value that must never appear in any message (an API key, a password)."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with registered secrets, Authorization values and URL credentials removed."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_CREDENTIALS.sub(lambda m: m["scheme"] + REDACTED + "@", text)
    text = _AUTH_VALUE.sub(lambda m: m["label"] + REDACTED, text)
    return _BEARER.sub(lambda m: m["label"] + REDACTED, text)


def redact_url(url: str) -> str:
    """``url`` without ``user:password@``: what to print wherever a server address is shown."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{REDACTED}@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """The user name and password inside ``url`` (registered as secrets by backends)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None, None
    return parts.username, parts.password
