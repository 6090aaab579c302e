"""End to end: per-cluster token budgets through the real proxy (mitmdump via `hydraguard run`)
with the official SDKs, the stand-in upstream's deterministic usage, and a real Redis for the
shared backend (two replicas, concurrency, Redis down)."""

from __future__ import annotations

import threading
import uuid

import anthropic
import httpx
import openai
import pytest

from hydraguard_dev.procs import proxy, wait_until

from .redis_util import delete_prefix, free_port, require_redis, unique_prefix

pytestmark = pytest.mark.e2e

# hydra linking needs combined evidence: the exits are flagged (an IP list: ip.list.exits)
# and the accounts send one prompt template; one shared exit alone never links
LINKING = """
indicators:
  ip:
    lists: [{name: exits, path: exits.txt}]
  prompts:
    templates: {min_words: 2}
"""
EXITS = "198.51.100.64/27\n"

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
""" + LINKING + """
clusters:
  - id: linked
    when: {client_ip: [198.51.100.64/27]}
    key: [cluster]
    link: {window: 600, evidence: [{kind: ip, min_accounts: 3}, {kind: template}]}
  - id: acct
    key: [account]
budgets:
  - id: tight              # 100 output tokens per 100 s: refills 1 token/s
    when: {model: "tight-*"}
    clusters: [acct]
    windows: [{seconds: 100, tokens: 100}]
    count: output
  - id: total
    when: {model: "total-*"}
    windows: [{per: day, tokens: 100000}]
  - id: capper
    when: {model: "cap-*"}
    windows: [{per: day, tokens: 100}]
    count: output
    on_exceed: cap_max_tokens
    cap_to: 5
  - id: watch
    when: {model: "shadow-*"}
    windows: [{per: day, tokens: 10}]
    count: output
    shadow: true
  - id: hydra
    clusters: [linked]
    windows: [{per: day, tokens: 300}]
    count: output
"""


@pytest.fixture(scope="module")
def gw(stub, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "budgets.yaml"
    rules.write_text(RULES)
    (rules.parent / "exits.txt").write_text(EXITS)
    with proxy(stub.url, rules) as p:
        yield p


def key() -> str:
    return "sk-test-" + uuid.uuid4().hex


def ant(gw, k, ip=None):
    headers = {"x-forwarded-for": ip} if ip else {}
    return anthropic.Anthropic(base_url=gw.url, api_key=k, max_retries=0,
                               default_headers=headers)


def oai(gw, k, ip=None):
    headers = {"x-forwarded-for": ip} if ip else {}
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=k, max_retries=0,
                         default_headers=headers)


def msg(c, model, n, **kw):
    return c.messages.create(model=model, max_tokens=n,
                             messages=[{"role": "user", "content": "hello there"}], **kw)


def recs(gw, model, n):
    """The decision lines of `model` (each test uses its own model name), once there are n."""
    wait_until(lambda: len([r for r in gw.lines() if r.get("model") == model]) >= n, 10,
               f"{n} lines of {model}")
    return [r for r in gw.lines() if r.get("model") == model]


def test_anthropic_budget_spent_gives_rate_limit_error_with_headers(gw):
    c = ant(gw, key())
    r1 = c.messages.with_raw_response.create(
        model="tight-a", max_tokens=40, messages=[{"role": "user", "content": "hello there"}])
    assert r1.headers["anthropic-ratelimit-tokens-limit"] == "100"
    assert r1.headers["anthropic-ratelimit-tokens-remaining"] == "60"  # after reserving 40
    rec = recs(gw, "tight-a", 1)[0]
    assert rec["budget"] == [{"id": "tight", "window": "100s", "limit": 100, "reserved": 40,
                              "charged": 40, "remaining": 60}]
    assert rec["cluster"].startswith("acct:account=acct_")
    with c.messages.stream(model="tight-a", max_tokens=40,
                           messages=[{"role": "user", "content": "x"}]) as s:
        assert s.get_final_message().usage.output_tokens == 40
    with pytest.raises(anthropic.RateLimitError) as e:
        msg(c, "tight-a", 40)
    h = e.value.response.headers
    assert e.value.status_code == 429 and e.value.body["error"]["type"] == "rate_limit_error"
    assert h["retry-after"] == "20"  # needs 40, 20 left, refills 1/s
    assert (h["anthropic-ratelimit-tokens-limit"], h["anthropic-ratelimit-tokens-remaining"]) \
        == ("100", "20")
    assert h["anthropic-ratelimit-tokens-reset"].endswith("Z")
    rec = recs(gw, "tight-a", 3)[2]
    assert rec["request_id"] == h["request-id"]
    assert (rec["action"], rec["rule"], rec["status"], rec["upstream_status"]) == (
        "throttle", "tight", 429, None)
    assert rec["budget"][0]["refused"] is True and rec["budget"][0]["needed"] == 40
    assert msg(c, "tight-a", 15).usage.output_tokens == 15  # what is left still fits


def test_openai_stream_and_json_budget(gw, stub):
    c = oai(gw, key())
    chunks = list(c.chat.completions.create(
        model="tight-o", max_tokens=45, stream=True,
        messages=[{"role": "user", "content": "count"}]))
    assert chunks and all(ch.choices for ch in chunks)  # usage chunk hidden
    raw = c.chat.completions.with_raw_response.create(
        model="tight-o", max_tokens=45, messages=[{"role": "user", "content": "count"}])
    assert raw.headers["x-ratelimit-limit-tokens"] == "100"
    assert raw.headers["x-ratelimit-remaining-tokens"] == "10"
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="tight-o", max_tokens=30, stream=True,
                                  messages=[{"role": "user", "content": "count"}])
    h = e.value.response.headers
    assert e.value.code == "rate_limit_exceeded" and h["retry-after"] == "20"
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("100", "10")
    lines = recs(gw, "tight-o", 3)
    assert [(r["usage_source"], r["budget"][0]["charged"]) for r in lines] == [
        ("stream", 45), ("json", 45), (None, 0)]


def test_cut_stream_charged_for_delivered(gw):
    k = key()
    body = {"model": "total-cut", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "hello there"}]}
    headers = {"x-api-key": k, "anthropic-version": "2023-06-01", "x-stub-cut-after": "9"}
    with pytest.raises(httpx.HTTPError), httpx.stream(
            "POST", gw.url + "/v1/messages", json=body, headers=headers, timeout=10) as r:
        b"".join(r.iter_raw())
    rec = recs(gw, "total-cut", 1)[0]
    assert rec["usage_source"] == "stream_estimate"
    b = rec["budget"][0]
    assert b["reserved"] == rec["input_tokens_est"] + 50
    assert b["charged"] == rec["input_tokens"] + rec["output_tokens"]
    assert 0 < rec["output_tokens"] < 50 and b["charged"] < b["reserved"]


def test_failed_request_releases_reservation(gw):
    k = key()
    c = anthropic.Anthropic(base_url=gw.url, api_key=k, max_retries=0,
                            default_headers={"x-stub-status": "500"})
    with pytest.raises(anthropic.InternalServerError):
        msg(c, "tight-f", 40)
    rec = recs(gw, "tight-f", 1)[0]
    assert rec["budget"][0] == {"id": "tight", "window": "100s", "limit": 100,
                                "reserved": 40, "charged": 0, "remaining": 100}
    r = ant(gw, k).messages.with_raw_response.create(
        model="tight-f", max_tokens=30, messages=[{"role": "user", "content": "x"}])
    assert r.headers["anthropic-ratelimit-tokens-remaining"] == "70"  # the 40 came back


def test_cap_max_tokens_rewrites_body(gw, stub):
    c = ant(gw, key())
    assert msg(c, "cap-a", 60).usage.output_tokens == 60
    assert stub.last("/v1/messages")["body"]["max_tokens"] == 60
    r = c.messages.with_raw_response.create(
        model="cap-a", max_tokens=60, messages=[{"role": "user", "content": "hello there"}])
    assert stub.last("/v1/messages")["body"]["max_tokens"] == 5  # 60 no longer fits in 40
    assert r.parse().usage.output_tokens == 5
    rec = recs(gw, "cap-a", 2)[1]
    assert rec["budget"][0] == {"id": "capper", "window": "day", "limit": 100, "reserved": 5,
                                "charged": 5, "remaining": 35, "capped_to": 5}
    assert rec["max_output"] == 60 and rec["action"] == "allow"


def test_shadow_budget_refuses_nothing_and_logs(gw):
    c = ant(gw, key())
    for _ in range(3):
        r = c.messages.with_raw_response.create(
            model="shadow-x", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        assert r.status_code == 200 and "anthropic-ratelimit-tokens-limit" not in r.headers
    rows = recs(gw, "shadow-x", 3)
    assert [("budget_shadow" in r) for r in rows] == [False, True, True]
    assert rows[1]["budget_shadow"][0]["id"] == "watch"
    assert rows[1]["budget_shadow"][0]["needed"] == 8
    assert rows[1]["budget_shadow"][0]["remaining"] == 2
    assert all(r["action"] == "allow" and r["status"] == 200 for r in rows)


def test_hydra_accounts_behind_one_ip_share_one_budget(gw):
    exit_ip = "198.51.100.70"
    outcomes = []
    for i in range(9):
        c = ant(gw, f"sk-hydra-{uuid.uuid4().hex[:8]}-{i}", ip=exit_ip)
        try:
            msg(c, "hydra-m", 50)
            outcomes.append(200)
        except anthropic.RateLimitError:
            outcomes.append(429)
    rows = recs(gw, "hydra-m", 9)
    clusters = [r["cluster"] for r in rows]
    # account 1 is alone (2 accounts on the exit and template, below 3); the 3rd links 0..2
    # under 0's id (flagged exit 0.7 + template 0.7); from then on every account charges the
    # one key: 0 + 2..6 = 6 x 50 = 300, the budget, so the 8th and 9th are refused
    assert outcomes == [200] * 7 + [429] * 2
    root = clusters[0]
    assert root.startswith("linked:cluster=h-")
    assert [c == root for c in clusters] == [True, False] + [True] * 7
    assert [("link" in r) for r in rows] == [False, False] + [True] * 7
    assert rows[2]["link"] == {"members": 3, "score": 1.4, "kinds": {"ip": 1, "template": 1},
                               "flagged": True, "via": rows[1]["account"], "age_s": 0.0}
    assert rows[8]["link"]["members"] == 9 and rows[8]["link"]["score"] == 1.4


# -------------------------------------------------------------------------------------------
# Redis: two replicas share one budget; concurrency; Redis down

REDIS_RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
""" + LINKING.replace("{", "{{").replace("}", "}}") + """
state: {{backend: redis, redis_url: "{url}", prefix: {prefix}, timeout_ms: {timeout},
         on_error: {on_error}}}
clusters:
  - id: linked
    when: {{model: "hydra-*"}}
    key: [cluster]
    link: {{window: 3600, evidence: [{{kind: ip, max_accounts: 100}}, {{kind: template}}]}}
  - id: acct
    key: [account]
budgets:
  - id: shared
    windows: [{{per: day, tokens: 100}}]
    count: output
  - id: bytotal
    when: {{model: "total-*"}}
    windows: [{{per: day, tokens: 2000}}]
"""


@pytest.fixture(scope="module")
def replicas(stub, tmp_path_factory):
    url = require_redis()
    prefix = unique_prefix()
    rules = tmp_path_factory.mktemp("redis") / "redis.yaml"
    # these tests are about sharing: a generous timeout, so a loaded machine's slow Redis
    # answer is not mistaken for an outage (the fallback has tests of its own below)
    rules.write_text(REDIS_RULES.format(url=url, prefix=prefix, timeout=10000, on_error="open"))
    (rules.parent / "exits.txt").write_text(EXITS)
    try:
        with proxy(stub.url, rules) as a, proxy(stub.url, rules) as b:
            yield a, b
    finally:
        delete_prefix(url, prefix)


def _post(url, k, model, n, out):
    body = {"model": model, "max_tokens": n, "messages": [{"role": "user", "content": "hi"}]}
    try:
        r = httpx.post(url + "/v1/messages", json=body, timeout=20,
                       headers={"x-api-key": k, "anthropic-version": "2023-06-01"})
        out.append(r.status_code)
    except httpx.HTTPError as e:
        out.append(repr(e))


def _burst(replicas, k, model, n_tokens, n=40):
    out: list = []
    threads = [threading.Thread(target=_post, args=(replicas[i % 2].url, k, model, n_tokens,
                                                     out)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def _lines_of(replicas, model, account=None):
    rows = [r for p in replicas for r in p.lines() if r.get("model") == model]
    return [r for r in rows if account is None or r["account"] == account]


def _wait_lines(replicas, model, n):
    wait_until(lambda: len(_lines_of(replicas, model)) >= n, 10, f"{n} lines of {model}")
    return _lines_of(replicas, model)


def test_two_replicas_enforce_one_budget(replicas):
    a, b = replicas
    k = key()
    ca, cb = ant(a, k), ant(b, k)
    assert msg(ca, "r-seq", 30).usage.output_tokens == 30
    assert msg(cb, "r-seq", 30).usage.output_tokens == 30
    r = ca.messages.with_raw_response.create(
        model="r-seq", max_tokens=30, messages=[{"role": "user", "content": "x"}])
    assert r.headers["anthropic-ratelimit-tokens-remaining"] == "10"
    with pytest.raises(anthropic.RateLimitError) as e:
        msg(cb, "r-seq", 30)
    assert e.value.response.headers["anthropic-ratelimit-tokens-remaining"] == "10"
    assert int(e.value.response.headers["retry-after"]) == 17280  # 20 tokens at 100/day


def test_concurrent_requests_across_replicas_never_overspend(replicas):
    k = key()
    out = _burst(replicas, k, "r-conc", 10)
    rows = _wait_lines(replicas, "r-conc", 40)
    assert not [r for r in rows if r.get("state_degraded")]
    assert sorted(out) == [200] * 10 + [429] * 30
    assert len(rows) == 40 and not any(r.get("state_degraded") for r in rows)
    assert sum(r["budget"][0]["charged"] for r in rows) == 100
    assert sum(r["output_tokens"] or 0 for r in rows if r["status"] == 200) == 100
    # weighted total with an input estimate: charged never exceeds the limit + estimate error
    k2 = key()
    out = _burst(replicas, k2, "total-conc", 100)
    rows = [r for r in _wait_lines(replicas, "total-conc", 40) if r["status"] == 200]
    charged = sum(e["charged"] for r in rows for e in r["budget"] if e["id"] == "bytotal")
    err = sum(max(0, r["input_tokens"] - r["input_tokens_est"]) for r in rows)
    assert out.count(200) == len(rows) > 0 and 429 in out
    assert charged <= 2000 + err


def test_redis_down_local_share_then_fail_closed(stub, tmp_path):
    port = free_port()  # nothing listens here
    url = f"redis://127.0.0.1:{port}/0"
    (tmp_path / "exits.txt").write_text(EXITS)
    rules = tmp_path / "down-open.yaml"
    rules.write_text(REDIS_RULES.format(url=url, prefix="hgdown", timeout=50, on_error="open"))
    with proxy(stub.url, rules) as p:
        c = ant(p, key())
        for _ in range(4):  # the local share (replicas: 1) is the whole budget of 100
            assert msg(c, "d-open", 20).usage.output_tokens == 20
        with pytest.raises(anthropic.RateLimitError) as e:
            msg(c, "d-open", 30)  # 80 spent: metered, not let through
        assert e.value.response.headers["anthropic-ratelimit-tokens-remaining"] == "20"
        recs = p.wait_lines(5)
        assert [(r["state_degraded"], r["state_backend"]) for r in recs] == [
            (True, "local")] * 5
        assert [r["status"] for r in recs] == [200] * 4 + [429]
        assert [r["budget"][0]["charged"] for r in recs] == [20] * 4 + [0]
        assert p.stderr().count("budget state DOWN") == 1
    rules = tmp_path / "down-closed.yaml"
    rules.write_text(REDIS_RULES.format(url=url, prefix="hgdown", timeout=50, on_error="closed"))
    with proxy(stub.url, rules) as p:
        for _ in range(2):
            with pytest.raises(anthropic.RateLimitError) as e:
                msg(ant(p, key()), "d-closed", 7)
            assert e.value.response.headers["retry-after"] == "1"
            assert "unavailable" in e.value.message
        with pytest.raises(openai.RateLimitError):
            oai(p, key()).chat.completions.create(
                model="d-closed", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        rec = p.wait_lines(3)[-1]
        assert (rec["state_degraded"], rec["state_backend"], rec["status"]) == (
            True, "none", 429)
        assert p.stderr().count("budget state DOWN") == 1


def test_replicas_share_hydra_linking(replicas):
    """Accounts of one operator alternate between two replicas: with the Redis backend the
    link evidence is shared, so both replicas name the same cluster and charge one budget.
    (Linked in memory per replica, each would see only 2 of the first 4 accounts.)"""
    a, b = replicas
    exit_ip = "198.51.100.71"
    tag = uuid.uuid4().hex[:8]
    outcomes = []
    for i in range(8):
        c = ant((a, b)[i % 2], f"sk-hydra-{tag}-{i}", ip=exit_ip)
        try:
            msg(c, "hydra-r", 20)
            outcomes.append(200)
        except anthropic.RateLimitError:
            outcomes.append(429)
    rows = sorted(_wait_lines(replicas, "hydra-r", 8), key=lambda r: r["ts"])
    rows = [r for r in rows if r["account"] in {x["account"] for x in rows[-8:]}][-8:]
    clusters = [r["cluster"] for r in rows]
    # accounts 0-1 are alone; the 3rd links 0..2 under account 0 (seen first, on replica a):
    # 0 + 2..5 charge one key, 5 x 20 = 100 = the budget, so the 7th and 8th are refused
    assert outcomes == [200] * 6 + [429] * 2
    root = clusters[0]
    assert root.startswith("linked:cluster=h-")
    assert [c == root for c in clusters] == [True, False] + [True] * 6
    assert [r["link"]["members"] for r in rows[2:]] == [3, 4, 5, 6, 7, 8]


def test_bad_redis_url_stops_run_and_fails_check(tmp_path):
    """A Redis URL redis-py cannot use: `check` names the line (when it is in the rules),
    `run` stops with a clear message (also when it comes from $REDIS_URL)."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\n"
                   "state: {backend: redis, redis_url: 'foo://x'}\n"
                   "clusters: [{id: acct, key: [account]}]\n"
                   "budgets: [{id: b, windows: [{per: minute, tokens: 100}]}]\n")
    out = subprocess.run([sys.executable, "-m", "hydraguard", "check", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == (
        f"{bad}:2:25: state.redis_url: 'foo://x' must start with one of redis://, "
        "rediss://, unix://")
    env_only = tmp_path / "env.yaml"
    env_only.write_text(bad.read_text().replace(", redis_url: 'foo://x'", ""))
    out = subprocess.run([sys.executable, "-m", "hydraguard", "run", "--upstream",
                          "http://127.0.0.1:9", "--rules", str(env_only)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "REDIS_URL": "foo://x"})
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "hydraguard: unusable budget state settings, not starting: Redis URL must specify "
        "one of the following schemes (redis://, rediss://, unix://)")
