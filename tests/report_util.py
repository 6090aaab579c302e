"""A synthetic decision log with known numbers, for the report tests (unit and browser)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()  # a multiple of 10 s (and 600 s)
SECRET_KEY = "sk-ant-api03-SECRETSECRETSECRET"  # must never reach a report


def ts(offset: float) -> str:
    """`ts` as the proxy writes it, ``offset`` seconds after T0."""
    return datetime.fromtimestamp(T0 + offset, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def rec(offset: float, **kw: Any) -> dict[str, Any]:
    """A decision log record (allowed by default) at T0 + offset."""
    r: dict[str, Any] = {
        "ts": ts(offset), "request_id": f"req_hg{int(offset * 1000):022d}",
        "client_ip": "192.0.2.1", "client_ip_source": "peer", "peer_ip": "192.0.2.1",
        "account": "acct_a", "method": "POST", "path": "/v1/messages",
        "api": "anthropic.messages", "model": "claude-x", "stream": False, "max_output": 100,
        "input_tokens_est": 10, "action": "allow", "rule": "default",
        "reason": "no rule matched", "shadow": False, "shadow_rules": [], "enforced": False,
        "status": 200, "upstream_status": 200, "input_tokens": 100, "output_tokens": 50,
        "usage_source": "json", "decision_us": 100, "duration_ms": 5.0,
        "geo": {"found": True, "country": "US", "registered_country": "US",
                "represented_country": None, "subdivisions": ["US-CA"]},
    }
    r.update(kw)
    return r


def refused(offset: float, action: str, rule: str, **kw: Any) -> dict[str, Any]:
    """An enforced refusal (answered by the proxy, no usage)."""
    base = {"action": action, "rule": rule, "enforced": True, "reason": "refused",
            "status": 403 if action == "deny" else 429, "upstream_status": None,
            "input_tokens": None, "output_tokens": None, "usage_source": None}
    base.update(kw)
    return rec(offset, **base)


def budget(limit: int, remaining: int, **kw: Any) -> list[dict[str, Any]]:
    """A `budget` field with one entry of budget `cluster-tokens`."""
    e = {"id": "cluster-tokens", "window": "minute", "limit": limit, "reserved": 10,
         "charged": 10, "remaining": remaining}
    e.update(kw)
    return [e]


def records() -> list[dict[str, Any]]:
    """17 decisions over 10 minutes; the numbers the tests expect are written next to them.

    - cluster c:big: 10 allowed (accounts a0..a3, addresses .10/.11, 150 tokens each: 1500)
      + 2 throttled by budget cluster-tokens (NL, no subdivision) = 12 requests, 2 refused
    - cluster c:cn: 3 denied by denied-countries (CN; CN-BJ twice, CN-SH once), account acct_cn
    - 1 deny in shadow (rule new-rule, US), cluster c:solo, 150 tokens (let through)
    - 1 allowed with shadow rule new-rule and a shadow budget hit (watch), cluster c:solo
    """
    out = []
    for i in range(10):  # at 0, 60, ..., 540 s
        out.append(rec(60 * i, account=f"acct_a{i % 4}", client_ip=f"198.51.100.{10 + i % 2}",
                       cluster="c:big", budget=budget(1000, 1000 - 100 * (i + 1)),
                       signals={"ip.residential_proxy": i < 3, "template.id": "t-1",
                                "template.accounts": i % 4}))
    out.append(refused(100, "throttle", "cluster-tokens", stage="budget", cluster="c:big",
                       account="acct_a0", geo={"country": "NL", "subdivisions": []},
                       budget=budget(1000, 5, reserved=0, charged=0, needed=150,
                                     refused=True)))
    out.append(refused(101, "throttle", "cluster-tokens", stage="budget", cluster="c:big",
                       account="acct_a1", geo={"country": "NL", "subdivisions": []},
                       budget=budget(1000, 5, reserved=0, charged=0, needed=150,
                                     refused=True)))
    for i, sub in enumerate(["CN-BJ", "CN-BJ", "CN-SH"]):
        out.append(refused(200 + i, "deny", "denied-countries", cluster="c:cn",
                           account="acct_cn",
                           geo={"country": "CN", "subdivisions": [sub]}))
    out.append(rec(300, action="deny", rule="new-rule", shadow=True, enforced=False,
                   shadow_rules=["new-rule"], cluster="c:solo", account="acct_s"))
    out.append(rec(599.5, shadow_rules=["new-rule"], cluster="c:solo", account="acct_s",
                   budget_shadow=[{"id": "watch", "window": "hour", "needed": 150,
                                   "remaining": 0, "retry_after": 3.0}]))
    return out


MALFORMED = [b"not json at all", b"[1, 2, 3]", b'{"no": "action"}', b"\xff\xfe{}",
             b'{"action": "allow", "rule": ' + json.dumps(SECRET_KEY).encode()[:-1]]


def write_log(path: Path, *, malformed: bool = True) -> Path:
    """The records as JSON lines, with the MALFORMED lines mixed in (line 3 and on)."""
    lines = [json.dumps(r).encode() for r in records()]
    if malformed:
        lines = lines[:2] + MALFORMED + lines[2:]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
