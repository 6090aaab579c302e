"""A stand-in model API upstream (Anthropic Messages and Message Batches, OpenAI Chat
Completions, Responses, the Batch API with files, legacy completions and embeddings,
Anthropic Text Completions).

Stdlib only: HTTP/1.1 with keep-alive on a ``ThreadingHTTPServer``. JSON and SSE replies parse
with the official SDKs. Run ``python -m hydraguard_dev.upstream --port 0 --port-file PATH``, or
``server, port = start_stub()`` and later ``server.shutdown()``.

Modules: ``content`` (token counts, text, SSE framing), ``anthropic_format``,
``openai_format`` and ``legacy_format`` (reply, event and error bodies per provider),
``batches`` (batches, files and the older endpoints, with their knobs), ``server`` (HTTP
routes, knobs, introspection, the CLI).

Deterministic usage:
- input tokens = ``max(1, chars // 4)`` where ``chars`` is the total length of every string
  value found (at any depth) under the keys ``system``, ``instructions``, ``content``, ``text``,
  ``input`` and ``prompt``;
- output tokens = ``x-stub-output-tokens`` header (default 64), lowered to the request's
  ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` when that is smaller (then
  the stop reason is ``max_tokens`` / ``length`` / Responses status ``incomplete``);
- the text is ``"tok tok tok ..."``: one word per token, one SSE delta per token.

Test knobs (request headers): ``x-stub-output-tokens: N``; ``x-stub-delay-ms: N`` (sleep before
every SSE event but the first, or once before a JSON reply); ``x-stub-cut-after: K`` (send K SSE
events then drop the connection: no terminator, no final chunk); ``x-stub-error-after: K``
(send K events then a provider-format mid-stream error and end the body cleanly);
``x-stub-status: N`` (reply N with a provider-format error body); ``x-stub-reset: 1`` (read
the request, then drop the connection with a TCP reset, no response); ``x-stub-stall: K`` (a
JSON reply: send nothing; SSE: send the head and K events; then stay silent until the client
hangs up, at most ``STALL_MAX_S``).

Introspection: ``GET /__stub/stats`` (requests per path), ``GET /__stub/last?path=/v1/...``
(headers and JSON body of the last request to that path), ``POST /__stub/reset``.
"""

from .anthropic_format import anthropic_error, anthropic_events, anthropic_message, anthropic_usage
from .content import (
    DEFAULT_OUTPUT_TOKENS,
    input_tokens_for,
    output_tokens_for,
    sse,
    text_deltas,
)
from .openai_format import (
    chat_completion,
    chat_events,
    chat_usage,
    openai_error,
    response_object,
    responses_events,
    responses_usage,
)
from .server import StubServer, error_body, start_stub

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "StubServer",
    "anthropic_error",
    "anthropic_events",
    "anthropic_message",
    "anthropic_usage",
    "chat_completion",
    "chat_events",
    "chat_usage",
    "error_body",
    "input_tokens_for",
    "openai_error",
    "output_tokens_for",
    "response_object",
    "responses_events",
    "responses_usage",
    "sse",
    "start_stub",
    "text_deltas",
]
