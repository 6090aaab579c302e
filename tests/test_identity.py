"""Accounts come from the credential the upstream authenticates; credential headers that
disagree or repeat are a problem the pipeline refuses (or strips)."""

from __future__ import annotations

import ipaddress

import pytest

from hydraguard import apis
from hydraguard.decide import decide
from hydraguard.facts import Facts
from hydraguard.identity import account_id, credential, strip_edits, values_of
from hydraguard.pipeline import Gateway, RequestView, header_getter
from hydraguard.policy import parse_policy


def lines(pairs: list[tuple[str, str]]):
    """`Values` over header lines (repeats kept, in order)."""
    def values(name: str) -> list[str]:
        return [v for k, v in pairs if k == name]
    return values


@pytest.mark.parametrize(("provider", "pairs", "key", "header", "problem"), [
    # OpenAI reads the Bearer token
    ("openai", [("authorization", "Bearer sk-1")], "sk-1", "authorization", None),
    ("openai", [("authorization", "Bearer sk-1"), ("x-api-key", "sk-rand")], "sk-1",
     "authorization", "x-api-key carries another key than authorization"),
    ("openai", [("authorization", "Bearer sk-1"), ("x-api-key", "sk-1")], "sk-1",
     "authorization", None),
    ("openai", [("x-api-key", "sk-1")], None, "authorization",
     "x-api-key is not read by this API"),
    ("openai", [("authorization", "Bearer sk-a"), ("authorization", "Bearer sk-b")], "sk-a",
     "authorization", "2 authorization headers"),
    ("openai", [("authorization", "Basic eDp5")], None, "authorization", None),
    # Anthropic reads x-api-key, else the Bearer token
    ("anthropic", [("x-api-key", "sk-1")], "sk-1", "x-api-key", None),
    ("anthropic", [("authorization", "Bearer sk-1")], "sk-1", "authorization", None),
    ("anthropic", [("x-api-key", " "), ("authorization", "Bearer sk-1")], "sk-1",
     "authorization", None),
    ("anthropic", [("x-api-key", "sk-1"), ("authorization", "Bearer sk-1")], "sk-1",
     "x-api-key", None),
    ("anthropic", [("x-api-key", "sk-1"), ("authorization", "Bearer sk-2")], "sk-1",
     "x-api-key", "authorization carries another key than x-api-key"),
    ("anthropic", [("x-api-key", "sk-rand"), ("x-api-key", "sk-1")], "sk-rand", "x-api-key",
     "2 x-api-key headers"),
    ("anthropic", [], None, "authorization", None),
])
def test_credential(provider, pairs, key, header, problem):
    got = credential(provider, lines(pairs))
    assert (got.key, got.header) == (key, header)
    if problem is None:
        assert got.problem is None
    else:
        assert got.problem is not None and problem in got.problem
        assert "sk-" not in got.problem  # never a key in a message


def test_strip_edits():
    pairs = [("x-api-key", "sk-rand"), ("x-api-key", "sk-1"), ("authorization", "Bearer x")]
    values = lines(pairs)
    assert strip_edits(credential("anthropic", values), values) == (
        ("authorization", "drop"), ("x-api-key", "first"))
    values = lines([("authorization", "Bearer sk-1"), ("x-api-key", "sk-2")])
    assert strip_edits(credential("openai", values), values) == (("x-api-key", "drop"),)


def test_joined_values_count_as_one_line():
    values = values_of(header_getter({"x-api-key": "a, b"}))
    assert credential("anthropic", values) == ("a, b", "x-api-key", None, ())


POLICY = parse_policy("version: 1\n")
STRIP = parse_policy("settings: {extra_credentials: strip}\n")


def facts(problem: str | None) -> Facts:
    ip = ipaddress.ip_address("192.0.2.1")
    return Facts("req_1", "POST", "/v1/chat/completions", ip, ip, api=apis.OPENAI_CHAT,
                 provider="openai", credential_problem=problem)


def test_decide_refuses_a_credential_problem_by_default():
    d = decide(facts("conflicting credentials: 2 x-api-key headers"), POLICY)
    assert (d.action, d.rule, d.kind, d.enforced) == (
        "deny", "credential_conflict", "invalid_request", True)
    assert d.reason == "conflicting credentials: 2 x-api-key headers; send one credential " \
        "header, once"
    assert decide(facts(None), POLICY).rule == "default"
    assert decide(facts("conflicting credentials: x"), STRIP).rule == "default"


def _begin(policy, pairs):
    gw = Gateway(policy, log_path="-", secret=b"s", geo=None)
    joined: dict[str, str] = {}
    for k, v in pairs:
        joined[k] = f"{joined[k]}, {v}" if k in joined else v
    req = RequestView("POST", "/v1/chat/completions", "192.0.2.1", joined.get,
                      body=b'{"model":"m","max_tokens":5,"messages":[]}',
                      header_names=frozenset(joined), header_values=lines(pairs))
    try:
        return gw.begin(req)
    finally:
        gw.close()


def test_pipeline_refuses_or_strips():
    pairs = [("authorization", "Bearer sk-1"), ("x-api-key", "sk-rand")]
    ex = _begin(POLICY, pairs)
    assert (ex.decision.rule, ex.header_edits) == ("credential_conflict", ())
    assert ex.facts.signals["headers.credential_conflict"] is True
    assert ex.facts.account == account_id(b"s", "sk-1")
    ex = _begin(STRIP, pairs)
    assert (ex.decision.rule, ex.header_edits) == ("default", (("x-api-key", "drop"),))
    assert ex.facts.account == account_id(b"s", "sk-1")
    ex = _begin(POLICY, pairs[:1])
    assert (ex.decision.rule, ex.header_edits, ex.facts.signals) == ("default", (), {})
