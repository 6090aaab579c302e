"""End to end: limits a client must not route around, through the real proxy with the official
SDKs. A client-chosen forwarding header must not pick the caller's address; a credential the
upstream ignores must not pick the account a budget charges."""

from __future__ import annotations

import uuid

import anthropic
import httpx2
import openai
import pytest

from hydraguard.identity import account_id
from hydraguard_dev.procs import DEV_SECRET, ROOT, proxy, wait_until

pytestmark = pytest.mark.e2e

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]   # the test client stands in for a load balancer
{extra}
geoip:
  location: {db}
clusters:
  - id: acct
    key: [account]
budgets:
  - id: small
    when: {{model: "budget-*"}}
    windows: [{{per: day, tokens: 3000}}]
    clusters: [acct]
rules:
  - id: sanctioned
    region: {{deny_countries: [KP]}}
    action: deny
"""
BODY = [{"role": "user", "content": "hi"}]


def _rules(tmp_path_factory, name, extra=""):
    path = tmp_path_factory.mktemp(name) / "rules.yaml"
    path.write_text(RULES.format(extra=extra, db=ROOT / "geoip" / "demo-city.mmdb"))
    return path


@pytest.fixture(scope="module")
def gw(stub, tmp_path_factory):
    with proxy(stub.url, _rules(tmp_path_factory, "refuse")) as p:
        yield p


@pytest.fixture(scope="module")
def gw_strip(stub, tmp_path_factory):
    with proxy(stub.url, _rules(tmp_path_factory, "strip", "  extra_credentials: strip")) as p:
        yield p


def key() -> str:
    return "sk-test-" + uuid.uuid4().hex


def acct(k: str) -> str:
    return account_id(DEV_SECRET.encode(), k)


def oai(p, k, **headers):
    """An OpenAI client whose calls each use 500 output tokens (the stub's knob)."""
    return openai.OpenAI(base_url=p.url + "/v1", api_key=k, max_retries=0,
                         default_headers={"x-stub-output-tokens": "500", **headers})


def chat(c, model, n=500, **kw):
    return c.chat.completions.with_raw_response.create(
        model=model, max_tokens=n, messages=BODY, **kw)


def _wait(p, model, n):
    """The decision lines of `model` (each test uses its own model name), once there are n."""
    wait_until(lambda: len([r for r in p.lines() if r.get("model") == model]) >= n, 10,
               f"{n} lines of {model}")
    return [r for r in p.lines() if r.get("model") == model]


def prepend_api_key(value: str) -> httpx2.Client:
    """An SDK http client that sends an extra `x-api-key` line before the SDK's own."""
    def hook(request: httpx2.Request) -> None:
        request.headers = httpx2.Headers([("x-api-key", value),
                                          *request.headers.multi_items()])
    return httpx2.Client(event_hooks={"request": [hook]})


# -- (1) the client address -----------------------------------------------------------------

def test_own_forwarded_header_does_not_escape_a_country_deny(gw):
    """Behind a balancer that appends X-Forwarded-For, a client's own `Forwarded` header
    passes through untouched: it must not choose the address (192.0.2.81 is KP)."""
    c = anthropic.Anthropic(base_url=gw.url, api_key=key(), max_retries=0, default_headers={
        "forwarded": "for=192.0.2.1", "x-forwarded-for": "192.0.2.81"})
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        c.messages.create(model="geo-spoof", max_tokens=5, messages=BODY)
    assert e.value.status_code == 403 and e.value.body["error"]["type"] == "permission_error"
    rec = _wait(gw, "geo-spoof", 1)[0]
    assert (rec["client_ip"], rec["client_ip_source"], rec["rule"]) == (
        "192.0.2.81", "x-forwarded-for", "sanctioned")
    assert rec["signals"]["headers.forwarding_conflict"] is True


def test_agreeing_forwarding_headers_raise_no_signal(gw):
    c = anthropic.Anthropic(base_url=gw.url, api_key=key(), max_retries=0, default_headers={
        "forwarded": "for=192.0.2.1", "x-forwarded-for": "192.0.2.1"})
    assert c.messages.create(model="geo-same", max_tokens=5, messages=BODY).usage \
        .output_tokens == 5
    rec = _wait(gw, "geo-same", 1)[0]
    assert rec["client_ip"] == "192.0.2.1"
    assert "headers.forwarding_conflict" not in rec.get("signals", {})


# -- (5) the account: the credential the upstream reads --------------------------------------

def test_bearer_key_budget_holds(gw):
    """The baseline: one OpenAI key, 3,000 tokens a day, 501 per call: 5 calls fit."""
    c = oai(gw, key())
    for _ in range(5):
        assert chat(c, "budget-base").status_code == 200
    with pytest.raises(openai.RateLimitError):
        chat(c, "budget-base")


def test_openai_call_with_x_api_key_is_refused(gw, stub):
    """OpenAI authenticates the Bearer token; a random x-api-key beside it used to be the
    account (a new budget per request)."""
    before = stub.stats().get("/v1/chat/completions", 0)
    k = key()
    for _ in range(3):
        with pytest.raises(openai.BadRequestError) as e:
            chat(oai(gw, k, **{"x-api-key": key()}), "budget-xkey")
        assert e.value.status_code == 400 and e.value.type == "invalid_request_error"
        assert "x-api-key" in e.value.message and "sk-test" not in e.value.message
    assert stub.stats().get("/v1/chat/completions", 0) == before  # never forwarded
    recs = _wait(gw, "budget-xkey", 3)
    assert {(r["action"], r["rule"], r["status"], r["account"]) for r in recs} == {
        ("deny", "credential_conflict", 400, acct(k))}
    assert all(r["signals"]["headers.credential_conflict"] is True for r in recs)


def ant_key(p, k, http_client=None):
    """An Anthropic client sending `x-api-key: k` (this SDK sends its api_key as a Bearer
    token too: the same key in both headers is no conflict)."""
    return anthropic.Anthropic(base_url=p.url, api_key=k, max_retries=0,
                               default_headers={"x-api-key": k}, http_client=http_client)


def test_same_key_in_both_headers_is_no_conflict(gw):
    k = key()
    assert ant_key(gw, k).messages.create(model="budget-same", max_tokens=5, messages=BODY) \
        .usage.output_tokens == 5
    rec = _wait(gw, "budget-same", 1)[0]
    assert rec["account"] == acct(k) and "signals" not in rec


def test_two_x_api_key_lines_are_refused(gw):
    """First line random, second the real key: the joined value used to be the account."""
    c = ant_key(gw, key(), http_client=prepend_api_key(key()))
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="budget-two-lines", max_tokens=5, messages=BODY)
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "2 x-api-key headers" in e.value.body["error"]["message"]
    rec = _wait(gw, "budget-two-lines", 1)[0]
    assert (rec["rule"], rec["status"], rec["upstream_status"]) == (
        "credential_conflict", 400, None)


def test_anthropic_key_and_other_bearer_token_are_refused(gw):
    c = anthropic.Anthropic(base_url=gw.url, auth_token=key(), max_retries=0,
                            default_headers={"x-api-key": key()})
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model="budget-both", max_tokens=5, messages=BODY)


def test_anthropic_bearer_token_alone_is_the_account(gw):
    k = key()
    c = anthropic.Anthropic(base_url=gw.url, auth_token=k, max_retries=0)
    assert c.messages.create(model="budget-bearer", max_tokens=5, messages=BODY).usage \
        .output_tokens == 5
    assert _wait(gw, "budget-bearer", 1)[0]["account"] == acct(k)


def test_strip_forwards_only_the_bearer_and_the_budget_holds(gw_strip, stub):
    """`extra_credentials: strip`: a random x-api-key per request is removed before
    forwarding, and the Bearer key's budget is charged: 5 x 200, then 429 (as without it)."""
    k = key()
    got = []
    for _ in range(6):
        try:
            got.append(chat(oai(gw_strip, k, **{"x-api-key": key()}), "budget-strip")
                       .status_code)
        except openai.RateLimitError as e:
            got.append(e.status_code)
    assert got == [200] * 5 + [429]
    seen = stub.last("/v1/chat/completions")["headers"]
    assert "x-api-key" not in seen and seen["authorization"] == f"Bearer {k}"
    recs = _wait(gw_strip, "budget-strip", 6)
    assert {r["account"] for r in recs} == {acct(k)}
    assert all(r["signals"]["headers.credential_conflict"] is True for r in recs)


def test_strip_keeps_the_first_of_repeated_key_lines(gw_strip, stub):
    """The forwarded line is the one the account is computed from."""
    first = key()
    c = ant_key(gw_strip, key(), http_client=prepend_api_key(first))
    assert c.messages.create(model="budget-strip-lines", max_tokens=5, messages=BODY) \
        .usage.output_tokens == 5
    seen = stub.last("/v1/messages")["headers"]
    assert seen["x-api-key"] == first and "authorization" not in seen
    assert _wait(gw_strip, "budget-strip-lines", 1)[0]["account"] == acct(first)
