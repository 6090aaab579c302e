"""Realistic request mixes for bench/run.py: many accounts and client IPs, long templated
prompts, both providers, a quarter streamed; and one long Anthropic stream.

Every request is built up front as raw HTTP/1.1 bytes (the load generator only writes them),
deterministically from a seed:
- `ACCOUNTS` API keys and `IPS` client addresses. Each account uses 1-3 addresses of its own
  "home" range; one request in 8 comes through one of 40 shared exits (offices, NAT, proxies).
  Addresses are sent in X-Forwarded-For; the proxies under test trust 127.0.0.1, so the
  address a request is judged by is the forwarded one. A third are IPv6 (in the demo
  databases' 2001:db8 /48s: found, with host bits varied), a third IPv4 in the demo /28s of
  allowed countries (found), a third public IPv4 that the demo databases do not know.
- Prompts: 6 slot-varied templates (bench/efficacy_text.py's hydra templates, padded with a
  pasted document of 2-6 KB), a popular tool's 6 KB system prompt with the users' own
  questions, and a SaaS backend's support prompt: 3-10 KB bodies.
- APIs: half Anthropic Messages, a third OpenAI Chat (streams without `include_usage`, so the
  proxy adds it and hides the usage chunk), the rest OpenAI Responses; a quarter streamed.
"""

from __future__ import annotations

import json
import random

from efficacy_text import (
    HYDRA_TEMPLATES,
    code_snippet,
    hydra_prompt,
    saas_system_prompt,
    saas_user_input,
    tool_system_prompt,
    user_turn,
)

ACCOUNTS = 6000
IPS = 6000
REQUESTS = 12000
STREAM_SHARE = 0.25
LONG_STREAM_EVENTS = 2000

_V6_NETS = ("2001:db8:1", "2001:db8:2", "2001:db8:3", "2001:db8:30", "2001:db8:300",
            "2001:db8:400", "2001:db8:600", "2001:db8:700")
_V4_NETS = ("192.0.2.0", "192.0.2.16", "192.0.2.32", "192.0.2.192", "198.51.100.16",
            "198.51.100.32", "198.51.100.96", "198.51.100.128", "198.51.100.160")


def _address(rng: random.Random, i: int) -> str:
    kind = i % 3
    if kind == 0:
        net = _V6_NETS[i % len(_V6_NETS)]
        return f"{net}:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}"
    if kind == 1:
        base = _V4_NETS[i % len(_V4_NETS)].rsplit(".", 1)
        return f"{base[0]}.{int(base[1]) + rng.randrange(16)}"
    while True:  # public IPv4 the demo databases do not know
        a = rng.randrange(1, 224)
        if a not in (10, 127, 100, 169, 172, 192, 198, 203):
            return f"{a}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _document(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    n = 0
    while n < size:
        p = user_turn(rng) if rng.random() < 0.7 else code_snippet(rng, rng.randint(5, 20))
        parts.append(p)
        n += len(p) + 2
    return "\n\n".join(parts)


def _prompt(rng: random.Random, tool_system: str, saas_system: str) -> tuple[str, str]:
    r = rng.random()
    if r < 0.5:  # a templated fleet: slot-varied template + a pasted document
        system, user = hydra_prompt(rng, rng.randrange(len(HYDRA_TEMPLATES)), cot=True,
                                    paraphrased=False)
        return system, user + "\n\nContext:\n" + _document(rng, rng.randint(2000, 6000))
    if r < 0.8:  # users of one popular tool: 6 KB shared system prompt, their own question
        return tool_system, user_turn(rng) + "\n\n" + _document(rng, rng.randint(500, 3000))
    return saas_system, saas_user_input(rng)  # a SaaS backend's support assistant


def _body(api: str, model: str, system: str, user: str, stream: bool) -> bytes:
    if api == "anthropic":
        obj: dict = {"model": model, "max_tokens": 1024, "system": system,
                     "messages": [{"role": "user", "content": user}]}
    elif api == "chat":
        obj = {"model": model, "max_tokens": 1024,
               "messages": [{"role": "system", "content": system},
                            {"role": "user", "content": user}]}
    else:
        obj = {"model": model, "max_output_tokens": 1024, "instructions": system,
               "input": [{"role": "user", "content": [{"type": "input_text", "text": user}]}]}
    if stream:
        obj["stream"] = True
    return json.dumps(obj).encode()


def _http(path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: upstream\r\n{head}content-type: application/json"
            f"\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


_PATHS = {"anthropic": "/v1/messages", "chat": "/v1/chat/completions",
          "responses": "/v1/responses"}


def realistic_requests(seed: int = 11, n: int = REQUESTS) -> list[bytes]:
    """`n` raw requests of the realistic mix (see the module docstring)."""
    rng = random.Random(seed)
    addresses = [_address(rng, i) for i in range(IPS)]
    exits = addresses[:40]
    homes = [[addresses[(a * 7 + j * 131) % IPS] for j in range(1 + a % 3)]
             for a in range(ACCOUNTS)]
    tool_system, saas_system = tool_system_prompt(), saas_system_prompt()
    out = []
    for i in range(n):
        # every account appears early on; later requests revisit them (Zipf-ish)
        a = i if i < ACCOUNTS else int(ACCOUNTS * rng.random() ** 2)
        ip = rng.choice(exits) if rng.random() < 0.125 else rng.choice(homes[a])
        r = rng.random()
        api = "anthropic" if r < 0.5 else "chat" if r < 0.83 else "responses"
        stream = rng.random() < STREAM_SHARE
        system, user = _prompt(rng, tool_system, saas_system)
        model = "claude-sonnet-4" if api == "anthropic" else "gpt-4.1"
        key = f"sk-bench-{a:06d}-{a * 7919 % 100003:x}"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"} if api == "anthropic" \
            else {"authorization": f"Bearer {key}"}
        headers["x-forwarded-for"] = ip
        headers["user-agent"] = "Anthropic/Python 0.40.0" if api == "anthropic" \
            else "OpenAI/Python 1.60.0"
        out.append(_http(_PATHS[api], headers, _body(api, model, system, user, stream)))
    return out


def long_stream_request(events: int = LONG_STREAM_EVENTS) -> bytes:
    """One streamed Anthropic request whose reply carries `events` text deltas (the stand-in
    upstream sends one delta per output token: `x-stub-output-tokens`)."""
    body = _body("anthropic", "claude-sonnet-4", "You are terse.", "Count to a big number.",
                 True).replace(b'"max_tokens": 1024', f'"max_tokens": {events}'.encode())
    return _http("/v1/messages", {"x-api-key": "sk-bench-long", "anthropic-version":
                                  "2023-06-01", "x-stub-output-tokens": str(events)}, body)
