"""Denials and rate-limit headers in each provider's own wire format.

Anthropic: ``{"type":"error","error":{"type","message"},"request_id"}`` + ``request-id`` header.
OpenAI: ``{"error":{"message","type","param":null,"code"}}`` + ``x-request-id`` header.
The official SDKs map the status to their exception classes (403 PermissionDeniedError, 429
RateLimitError, 400 BadRequestError, ...). "unavailable" is Anthropic's 529 ``overloaded_error``
(the documented "try again later" pair; the SDK raises OverloadedError) and OpenAI's 503.
"upstream" / "upstream_timeout" answer for an upstream that failed or went silent: 502
``api_error`` / 504 ``timeout_error`` (Anthropic; the SDK raises InternalServerError /
GatewayTimeoutError), 502 / 504 ``server_error`` (OpenAI: InternalServerError).
A 429 whose ``retry-after`` exceeds 60 s also sends ``x-should-retry: false``: both SDKs would
otherwise ignore so long a wait and retry at once with backoff, only to be refused again.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .request import provider_of

# kind -> (status, anthropic error type, openai error type, openai code)
_KINDS: dict[str, tuple[int, str, str, str | None]] = {
    "permission": (403, "permission_error", "request_forbidden", "access_denied"),
    "region": (
        403, "permission_error", "request_forbidden", "unsupported_country_region_territory",
    ),
    "rate_limit": (429, "rate_limit_error", "tokens", "rate_limit_exceeded"),
    "invalid_request": (400, "invalid_request_error", "invalid_request_error", None),
    "too_large": (413, "request_too_large", "invalid_request_error", "request_too_large"),
    "unavailable": (503, "overloaded_error", "server_error", "service_unavailable"),
    "upstream": (502, "api_error", "server_error", "bad_gateway"),
    "upstream_timeout": (504, "timeout_error", "server_error", "gateway_timeout"),
}
_ANTHROPIC_STATUS = {"unavailable": 529}
_FALLBACK = (500, "api_error", "server_error", None)
KINDS = frozenset(_KINDS)
MAX_WAIT = 366 * 86400.0
"""Longest wait any header will announce (also the value for infinite / NaN inputs)."""


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """A token limit, what is left of it, and seconds until it is fully available again."""

    limit: int
    remaining: int
    reset_seconds: float


def _seconds(v: object) -> float:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if math.isnan(f):
        return MAX_WAIT
    return min(max(f, 0.0), MAX_WAIT)


def _whole(v: object) -> int:
    try:
        return max(int(v), 0)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: ``250ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    s = _seconds(seconds)
    if s < 1:
        ms = math.ceil(s * 1000)
        return "0s" if ms == 0 else ("1s" if ms >= 1000 else f"{ms}ms")
    ms_total = math.ceil(s * 1000)
    h, rem = divmod(ms_total, 3_600_000)
    m, rem = divmod(rem, 60_000)
    sec = f"{rem / 1000:.3f}".rstrip("0").rstrip(".")
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def rfc3339(ts: float) -> str:
    """UTC RFC 3339 timestamp, rounded up to the whole second: ``2025-01-01T00:00:00Z``."""
    try:
        t = math.ceil(min(max(float(ts), 0.0), 253402300799.0))
    except (TypeError, ValueError, OverflowError):
        t = 0
    return _rfc3339_whole(t)


@functools.lru_cache(maxsize=1024)
def _rfc3339_whole(t: int) -> str:
    """Formatting is the costly part and `t` repeats within a second (hot path: every
    allowed request carries rate-limit headers)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ratelimit_headers(provider: str, info: RateLimitInfo, now: float) -> dict[str, str]:
    """Token rate-limit headers of ``provider`` for ``info``; ``now`` is a Unix time."""
    limit, remaining = _whole(info.limit), _whole(info.remaining)
    reset = _seconds(info.reset_seconds)
    if provider == "anthropic":
        try:
            at = rfc3339(float(now) + reset)
        except (TypeError, ValueError):
            at = rfc3339(time.time() + reset)
        return {
            "anthropic-ratelimit-tokens-limit": str(limit),
            "anthropic-ratelimit-tokens-remaining": str(remaining),
            "anthropic-ratelimit-tokens-reset": at,
        }
    return {
        "x-ratelimit-limit-tokens": str(limit),
        "x-ratelimit-remaining-tokens": str(remaining),
        "x-ratelimit-reset-tokens": go_duration(reset),
    }


def retry_after_value(seconds: float | None) -> str:
    """``retry-after`` header value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(_seconds(seconds)))) if seconds is not None else "1"


def error_response(
    api: str | None,
    provider: str,
    kind: str,
    message: str,
    *,
    request_id: str,
    retry_after: float | None = None,
    ratelimit: RateLimitInfo | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """``(status, body, headers)`` of a denial in the provider's format.

    ``provider`` picks the format ("anthropic", anything else is OpenAI's; if it is neither,
    ``api`` decides). An unknown ``kind`` gives a 500. 429s always carry ``retry-after``
    (``retry_after``, else ``ratelimit.reset_seconds``, else 1) and the token rate-limit
    headers when ``ratelimit`` is given.
    """
    if provider not in ("anthropic", "openai"):
        provider = provider_of(api)
    status, a_type, o_type, o_code = _KINDS.get(kind, _FALLBACK)
    message = message if isinstance(message, str) else str(message)
    request_id = request_id if isinstance(request_id, str) else str(request_id)
    headers = {"content-type": "application/json"}
    if provider == "anthropic":
        status = _ANTHROPIC_STATUS.get(kind, status)
        body = {
            "type": "error",
            "error": {"type": a_type, "message": message},
            "request_id": request_id,
        }
        headers["request-id"] = request_id
    else:
        body = {"error": {"message": message, "type": o_type, "param": None, "code": o_code}}
        headers["x-request-id"] = request_id
    if status == 429:
        wait = retry_after
        if wait is None and ratelimit is not None:
            wait = ratelimit.reset_seconds
        headers["retry-after"] = retry_after_value(wait)
        if int(headers["retry-after"]) > 60:
            headers["x-should-retry"] = "false"
        if ratelimit is not None:
            headers.update(ratelimit_headers(provider, ratelimit, time.time()))
    data = json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")
    return status, data, headers
