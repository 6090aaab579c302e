"""Default tables the rules refer to by name: the shipped prompt patterns (`builtin:`), the
proxy / forwarding header names hydraguard looks at (`indicators.headers.ignore`) and the
POSTs that spend nothing (`settings.harmless_posts: [default, ...]`).

Plain constants. The signal code (`hydraguard.signals.prompts`,
`hydraguard.signals.proxy_headers`) imports them from here.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PATTERNS", "FORWARDING_HEADERS", "HARMLESS_POSTS", "PROXY_HEADERS"]

# --- prompt patterns ---------------------------------------------------------------------------

_VERB = (
    r"(?:write|spell|lay|set|show|explain|give|provide|output|reveal|detail|describe|include"
    r"|reproduce|reconstruct|articulate|generate|produce|walk\s+(?:me|us)\s+through)"
)
_NOUN = (
    r"(?:reasoning|thought\s+process|chain[-\s]of[-\s]thought|thinking|rationale|derivation"
    r"|thoughts|intermediate\s+steps)"
)
_STEPS = r"step[-\s]by[-\s]step"
#: Default example patterns as (name, regex, flags); flags as in
#: `hydraguard.signals.prompts.PromptPatterns`. "cot_elicitation": asking the model to write
#: out its step-by-step reasoning, typically for an answer it is given. Weak on its own:
#: combine it with volume. String regexes are matched against the lower-cased text, only in
#: windows around the gate words, which keeps an 8 KB prompt without gate words at a few
#: microseconds.
DEFAULT_PATTERNS: tuple[tuple[str, str, str], ...] = (
    (
        "cot_elicitation",
        # verb, up to 6 words, [full|step-by-step] reasoning, then within 160 characters
        # "step by step" or the answer; or "step-by-step reasoning" near "answer" either side.
        rf"\b{_VERB}\b(?:\W+\w+){{0,6}}?\W+{_NOUN}\b"
        rf"[^\n]{{0,160}}?\b(?:{_STEPS}|answer|solution|conclusion|result)\b"
        rf"|\b{_STEPS}\s+{_NOUN}\b[^\n]{{0,160}}?\b(?:answer|solution)\b"
        rf"|\b(?:answer|solution)\b[^\n]{{0,160}}?\b{_STEPS}\s+{_NOUN}\b",
        "regex gate=reasoning|thought|thinking|rationale|derivation|intermediate window=400",
    ),
)

# --- proxy headers -----------------------------------------------------------------------------

#: Headers a forwarding hop (load balancer, CDN, proxy) adds to name the client or the request.
FORWARDING_HEADERS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded",
        "forwarded-for",
        "x-real-ip",
        "client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "true-client-ip",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
    }
)
#: Headers that only a proxy (or a client configured for one) sends; suspicious from any peer.
PROXY_HEADERS = frozenset(
    {
        "via",
        "proxy-connection",
        "x-proxy-connection",
        "x-proxy-id",
        "proxy-agent",
        "proxy-authorization",
        "x-bluecoat-via",
        "xroxy-connection",
        "x-imforwards",
    }
)

# --- harmless POSTs ----------------------------------------------------------------------------

#: POST / PUT / PATCH paths (fnmatch globs, as `when: {path: ...}`) that the official SDKs send
#: and that spend no model tokens: forwarded without a budget. Any other POST the proxy does not
#: meter is refused (403). Model calls, batch submissions, file uploads and batch cancels are
#: routed by the proxy itself and need no entry. `settings.harmless_posts: [default, ...]`
#: keeps this list and adds to it.
HARMLESS_POSTS: tuple[str, ...] = (
    # Anthropic
    "/v1/messages/count_tokens",  # token counting (free)
    "/v1/skills",  # create an Agent Skill / a version of it: stores files
    "/v1/skills/*/versions",
    # OpenAI
    "/v1/responses/input_tokens",  # token counting (free)
    "/v1/responses/*/cancel",  # cancel a background response
    "/v1/chat/completions/*",  # update a stored completion's metadata
    "/v1/moderations",  # free
    "/v1/uploads",  # multipart file uploads (a batch over such a file is refused: unmetered)
    "/v1/uploads/*/parts",
    "/v1/uploads/*/complete",
    "/v1/uploads/*/cancel",
    "/v1/conversations",  # stored conversation state: no model call
    "/v1/conversations/*",
)
