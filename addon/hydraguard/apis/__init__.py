"""Wire formats of the model APIs: parse requests, read usage (JSON and SSE), build denials.

Pure functions and small values; no mitmproxy, nothing raises on bad input.
"""

from .errors import KINDS, RateLimitInfo, error_response, ratelimit_headers
from .request import (
    ANTHROPIC_MESSAGES,
    APIS,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    ParsedRequest,
    api_for_path,
    parse_request,
    provider_for_request,
    provider_of,
    with_include_usage,
    with_max_output,
)
from .sse import StreamMeter, make_stream_meter
from .usage import Usage, usage_from_json

__all__ = [
    "ANTHROPIC_MESSAGES",
    "APIS",
    "KINDS",
    "OPENAI_CHAT",
    "OPENAI_RESPONSES",
    "ParsedRequest",
    "RateLimitInfo",
    "StreamMeter",
    "Usage",
    "api_for_path",
    "error_response",
    "make_stream_meter",
    "parse_request",
    "provider_for_request",
    "provider_of",
    "ratelimit_headers",
    "usage_from_json",
    "with_include_usage",
    "with_max_output",
]
