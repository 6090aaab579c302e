"""The `settings:` and `log:` sections of a rules file: schema and compiled values."""

from __future__ import annotations

from typing import Any

from .model import CREDENTIAL_MODES, FORWARDING_HEADERS, LogSettings, Settings
from .schema import Bool, Custom, Field, Int, ListOf, Network, Num, Str, Struct

_DEFAULT = Settings()


def _harmless_glob(v: str) -> str:
    v = v.strip()
    if v != "default" and not v.startswith("/"):
        raise ValueError(f"{v!r} is neither a path glob starting with '/' nor 'default'")
    return v


SETTINGS = Struct(
    doc="How the proxy finds the caller, treats odd requests and waits for the upstream.",
    fields={
        "trusted_proxies": Field(
            ListOf(Network()), default=(),
            doc="CIDRs of proxies/load balancers whose forwarding headers are believed. "
            "The header chain is walked right to left, skipping trusted hops.",
            example=["10.0.0.0/8", "127.0.0.1/32"],
        ),
        "client_ip_headers": Field(
            ListOf(Str(choices=FORWARDING_HEADERS), min_len=1),
            default=_DEFAULT.client_ip_headers,
            doc="Forwarding headers read from trusted peers: name exactly the one your load "
            "balancer appends to (see the table in the README; nginx, HAProxy "
            "`option forwardfor`, AWS ALB, GCP, Envoy and Cloudflare all append to "
            "x-forwarded-for). A further header is read only when the first is absent. Any "
            "other forwarding header is passed through untouched by the balancer, so the "
            "client wrote it: when it names another client, the listed header still "
            "decides and the request gets the signal `headers.forwarding_conflict`.",
            example=["x-forwarded-for"],
        ),
        "account_secret_env": Field(
            Str(), default="HYDRAGUARD_ACCOUNT_SECRET",
            doc="Environment variable holding the HMAC secret that turns API keys into "
            "account hashes. Every replica must share it.",
        ),
        "extra_credentials": Field(
            Str(choices=CREDENTIAL_MODES), default=_DEFAULT.extra_credentials,
            doc="A request whose credential headers disagree (OpenAI paths: an x-api-key "
            "beside the Bearer token the upstream reads; Anthropic: x-api-key and an "
            "Authorization of another key) or repeat (two x-api-key lines): `refuse` "
            "answers 400 in the provider's format (rule `credential_conflict`); `strip` "
            "forwards only the credential the upstream reads (first line of it), which is "
            "also the one the account is computed from. Either way the request gets the "
            "signal `headers.credential_conflict`.",
        ),
        "non_model_paths": Field(
            Str(choices=("pass", "deny")), default="pass",
            doc="What to do with requests that are not model calls (logged either way).",
        ),
        "max_body_bytes": Field(
            Int(min=1024, max=1 << 30), default=16 * 1024 * 1024,
            doc="Largest request body accepted (after decompression); larger gets 413.",
        ),
        "bad_body": Field(
            Str(choices=("deny", "pass")), default="deny",
            doc="Model call whose body is not valid JSON: answer 400 (deny) or forward (pass).",
        ),
        "upstream_connect_timeout": Field(
            Num(min=0.1, max=3600), default=_DEFAULT.upstream_connect_timeout,
            doc="Seconds to wait for the connection to the upstream; then the client gets a "
            "504 in the provider's format and the request's budget reservation is released.",
        ),
        "upstream_read_timeout": Field(
            Num(min=0.1, max=86400), default=_DEFAULT.upstream_read_timeout,
            doc="Seconds the upstream may stay silent: before the response head, between "
            "two chunks of a streamed response, and for the body of a JSON response. "
            "Then the upstream connection is closed: a 504 in the provider's format when "
            "nothing was sent yet, else the stream ends; the reservation is settled either "
            "way. mitmproxy's own `tcp_timeout` (600 s) also closes idle client "
            "connections: raise it (`-- --set tcp_timeout=N`) for a longer read timeout.",
        ),
        "harmless_posts": Field(
            ListOf(Custom(_harmless_glob)), default=("default",),
            doc="POST / PUT / PATCH paths (globs, as `when: {path}`) that spend no tokens and "
            "are forwarded without a budget; any other POST the proxy does not meter gets 403. "
            "`default` stands for the shipped list (count_tokens, input_tokens, response "
            "cancel, stored-completion updates, moderations, uploads, conversations, skills: "
            "policy/catalogue.py). Model calls, batches, file uploads and batch cancels are "
            "routed by the proxy itself.",
            example=["default", "/v1/vector_stores/*/search"],
        ),
        "max_choices": Field(
            Int(min=1, max=1024), default=16,
            doc="Most outputs one prompt may ask for (OpenAI chat / completions `n`, "
            "`best_of`); more gets 400. Whatever passes is reserved in full: n times the "
            "output cap.",
        ),
        "max_batch_body_bytes": Field(
            Int(min=1024, max=1 << 31), default=256 * 1024 * 1024,
            doc="Largest Anthropic Message Batches body accepted (POST /v1/messages/batches, "
            "buffered to be estimated before it is forwarded); larger gets 413.",
        ),
        "max_batch_requests": Field(
            Int(min=1, max=1_000_000), default=100_000,
            doc="Most requests in one batch (Anthropic) or batch input file (OpenAI); a "
            "batch with more is refused (400 / 403).",
        ),
        "max_upload_bytes": Field(
            Int(min=1024, max=1 << 31), default=200 * 1024 * 1024,
            doc="Largest file upload (POST /v1/files), streamed to the upstream and never "
            "held in memory; larger gets 413.",
        ),
        "batch_record_ttl": Field(
            Num(min=60), default=30 * 86400,
            doc="Seconds a batch (and an uploaded batch input file) is remembered for the "
            "refund its results bring (Anthropic keeps results 29 days).",
        ),
        "public_base_url": Field(
            Str(non_empty=False), default="",
            doc="Base URL clients reach the proxy at, for the `results_url` of Anthropic "
            "batches (rewritten so results are read through the proxy). Empty: a path-only "
            "URL, which the SDKs resolve against their base_url.",
            example="https://llm-gateway.example.com",
        ),
    },
)

LOG = Struct(
    doc="The decision log: one JSON line per request.",
    fields={
        "path": Field(Str(), default="-", doc="File to append to, or '-' for stdout."),
        "max_bytes": Field(Int(min=0), default=100 * 1024 * 1024,
                           doc="Rotate the file at this size (0: never)."),
        "backups": Field(Int(min=0, max=100), default=5, doc="Rotated files kept."),
        "truncate_ip": Field(Bool(), default=False,
                             doc="Log client IPs truncated to /24 (IPv4) and /64 (IPv6)."),
    },
)


def compile_settings(c: dict[str, Any] | None) -> Settings:
    """The checked `settings:` section as a Settings value (defaults when absent)."""
    if c is None:
        return Settings()
    return Settings(
        trusted_proxies=tuple(c["trusted_proxies"]),
        client_ip_headers=tuple(c["client_ip_headers"]),
        account_secret_env=c["account_secret_env"],
        extra_credentials=c["extra_credentials"],
        non_model_paths=c["non_model_paths"],
        max_body_bytes=c["max_body_bytes"],
        bad_body=c["bad_body"],
        upstream_connect_timeout=float(c["upstream_connect_timeout"]),
        upstream_read_timeout=float(c["upstream_read_timeout"]),
        harmless_posts=tuple(c["harmless_posts"]),
        max_choices=c["max_choices"],
        max_batch_body_bytes=c["max_batch_body_bytes"],
        max_batch_requests=c["max_batch_requests"],
        max_upload_bytes=c["max_upload_bytes"],
        batch_record_ttl=float(c["batch_record_ttl"]),
        public_base_url=c["public_base_url"],
    )


def compile_log(c: dict[str, Any] | None) -> LogSettings:
    """The checked `log:` section as a LogSettings value (defaults when absent)."""
    if c is None:
        return LogSettings()
    return LogSettings(path=c["path"], max_bytes=c["max_bytes"], backups=c["backups"],
                       truncate_ip=c["truncate_ip"])
