"""End to end: batches and every other way to spend, through the real proxy (`hydraguard
run`) with the official SDKs' own methods and the stand-in upstream's deterministic usage.
Reservations, charges and settlements are asserted exactly from the decision log.

Every request here has 40 characters of prompt: estimated 10 tokens (ceil(40 / 4)) and
counted 10 by the stand-in upstream, so estimates and usage agree to the token."""

from __future__ import annotations

import io
import json
import uuid

import anthropic
import httpx
import openai
import pytest

from hydraguard.identity import account_id
from hydraguard_dev.procs import DEV_SECRET, proxy, wait_until

from .redis_util import delete_prefix, require_redis, unique_prefix

pytestmark = pytest.mark.e2e

PROMPT = "x" * 40  # 10 tokens, estimated and counted
PARTNER = "sk-realtime-partner"
RULES = f"""
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
  max_choices: 8
clusters:
  - id: acct
    key: [account]
budgets:
  - id: tiny                 # the issue: 1,000 tokens a day
    when: {{model: "tiny-*"}}
    windows: [{{per: day, tokens: 1000}}]
  - id: roomy                # refills 0.003 tokens/s: levels read exactly within a test
    when: {{model: "roomy-*"}}
    windows: [{{seconds: 31536000, tokens: 100000, name: year}}]
  - id: capper
    when: {{model: "cap-*"}}
    windows: [{{per: day, tokens: 3000}}]
    on_exceed: cap_max_tokens
    cap_to: 256
rules:
  - id: realtime-partners
    when: {{path: ["/v1/realtime"], account: [{account_id(DEV_SECRET.encode(), PARTNER)}]}}
    action: allow
"""


@pytest.fixture(scope="module")
def gw(stub, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "batches.yaml"
    rules.write_text(RULES)
    with proxy(stub.url, rules) as p:
        yield p


def key() -> str:
    return "sk-test-" + uuid.uuid4().hex


def ant(gw, k: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=k, max_retries=0)


def oai(gw, k: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=k, max_retries=0)


def areqs(n: int, model: str, max_tokens: int) -> list[dict]:
    return [{"custom_id": f"r{i}", "params": {
        "model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": PROMPT}]}} for i in range(n)]


def lines_of(gw, account: str, n: int) -> list[dict]:
    """The decision lines of one account (each test uses its own key), once there are n."""
    acct = account_id(DEV_SECRET.encode(), account)
    wait_until(lambda: len([r for r in gw.lines() if r.get("account") == acct]) >= n, 15,
               f"{n} lines")
    return [r for r in gw.lines() if r.get("account") == acct]


def test_the_issue_three_big_batches_are_refused_in_full(gw, stub):
    """1,000 tokens a day; three batches of 1,000 requests asking 8,192 tokens each."""
    k = key()
    before = stub.stats().get("/v1/messages/batches", 0)
    for _ in range(3):
        with pytest.raises(anthropic.RateLimitError) as e:
            ant(gw, k).messages.batches.create(requests=areqs(1000, "tiny-x", 8192))
        assert e.value.status_code == 429 and e.value.body["error"]["type"] == \
            "rate_limit_error"
        assert e.value.response.headers["retry-after"] == "86400"
    assert stub.stats().get("/v1/messages/batches", 0) == before  # nothing went upstream
    recs = lines_of(gw, k, 3)
    for rec in recs:
        assert (rec["route"], rec["api"], rec["action"], rec["rule"], rec["status"]) == (
            "batch", "anthropic.batches", "throttle", "tiny", 429)
        assert rec["budget"] == [{"id": "tiny", "window": "day", "limit": 1000,
                                  "reserved": 0, "charged": 0, "needed": 1000 * (10 + 8192),
                                  "remaining": 1000, "refused": True}]
        b = rec["batch"]
        assert (b["id"], b["requests"], b["input_tokens_est"], b["output_tokens"],
                b["tokens_reserved"], b["prompts_observed"], b["sampled"]) == (
            None, 1000, 10_000, 8_192_000, 0, 32, True)


def test_anthropic_batch_is_charged_at_submission_and_settled_by_its_results(gw):
    k = key()
    c = ant(gw, k)
    batch = c.messages.batches.create(requests=areqs(3, "roomy-a", 100),
                                      extra_headers={"x-stub-output-tokens": "20"})
    results = list(c.messages.batches.results(batch.id))  # retrieve, then results_url
    assert sorted(r.custom_id for r in results) == ["r0", "r1", "r2"]
    assert {r.result.message.usage.output_tokens for r in results} == {20}
    after = c.messages.with_raw_response.create(
        model="roomy-a", max_tokens=50, messages=[{"role": "user", "content": PROMPT}])
    # 90 tokens used by the batch, 60 reserved for this request
    assert after.headers["anthropic-ratelimit-tokens-remaining"] == str(100_000 - 90 - 60)
    create, retrieve, read, _ = lines_of(gw, k, 4)
    assert (create["path"], create["status"]) == ("/v1/messages/batches", 200)
    assert create["budget"] == [{"id": "roomy", "window": "year", "limit": 100_000,
                                 "reserved": 330, "charged": 330, "remaining": 99_670}]
    assert (create["batch"]["id"], create["batch"]["tokens_reserved"],
            create["batch"]["recorded"]) == (batch.id, 330, True)
    assert (retrieve["route"], retrieve.get("batch_settle")) == ("batch_object", None)
    assert (read["route"], read["path"]) == ("results", f"/v1/messages/batches/{batch.id}"
                                                        "/results")
    assert read["batch_settle"] == [{
        "id": batch.id, "mode": "results", "results": 3, "succeeded": 3,
        "input_tokens": 30, "output_tokens": 60, "settled": True,
        "budgets": [{"id": "roomy", "charged": 330, "now": 90, "change": -240}]}]
    list(c.messages.batches.results(batch.id))  # read again: nothing moves twice
    again = lines_of(gw, k, 6)[-1]
    assert again["batch_settle"][0]["budgets"][0]["change"] == 0


def test_a_cancelled_batch_gets_back_what_it_did_not_run(gw):
    k = key()
    c = ant(gw, k)
    batch = c.messages.batches.create(requests=areqs(4, "roomy-b", 100), extra_headers={
        "x-stub-output-tokens": "20", "x-stub-batch-complete": "1"})
    assert c.messages.batches.cancel(batch.id).processing_status == "canceling"
    ended = c.messages.batches.retrieve(batch.id)
    assert (ended.processing_status, ended.request_counts.canceled) == ("ended", 3)
    assert ended.results_url == f"/v1/messages/batches/{batch.id}/results"  # via the proxy
    kinds = sorted(r.result.type for r in c.messages.batches.results(batch.id))
    assert kinds == ["canceled", "canceled", "canceled", "succeeded"]
    create, cancel, retrieve, retrieve2, read = lines_of(gw, k, 5)
    assert create["budget"][0]["charged"] == 440
    assert "batch_settle" not in cancel  # still canceling: its counts are not final
    assert retrieve["batch_settle"] == [{
        "id": batch.id, "mode": "unused", "requests": 4, "unused": 3,
        "budgets": [{"id": "roomy", "charged": 440, "now": 110, "change": -330}]}]
    assert "batch_settle" not in retrieve2  # (results() retrieves again): nothing more
    assert read["batch_settle"][0]["budgets"] == [
        {"id": "roomy", "charged": 440, "now": 30, "change": -80}]


def test_a_batch_may_be_capped_by_its_budget(gw, stub):
    k = key()
    ant(gw, k).messages.batches.create(requests=areqs(10, "cap-a", 8192))
    sent = stub.last("/v1/messages/batches")["body"]["requests"]
    assert {r["params"]["max_tokens"] for r in sent} == {256}
    rec = lines_of(gw, k, 1)[0]
    assert rec["budget"] == [{"id": "capper", "window": "day", "limit": 3000,
                              "reserved": 2660, "charged": 2660, "remaining": 340,
                              "capped_to": 256}]


def jsonl(lines: list[dict]) -> io.BytesIO:
    return io.BytesIO("\n".join(json.dumps(x) for x in lines).encode())


def chat_line(i: int, model: str, url: str = "/v1/chat/completions") -> dict:
    return {"custom_id": f"q{i}", "method": "POST", "url": url, "body": {
        "model": model, "max_tokens": 50, "messages": [{"role": "user", "content": PROMPT}]}}


def test_openai_batch_is_charged_from_its_uploaded_file_and_settled_by_the_output(gw):
    k = key()
    c = oai(gw, k)
    f = c.files.create(file=("in.jsonl", jsonl([chat_line(i, "roomy-o") for i in range(4)])),
                       purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                         completion_window="24h", extra_headers={"x-stub-output-tokens": "20"})
    done = c.batches.retrieve(b.id)
    assert (done.status, done.request_counts.completed) == ("completed", 4)
    out = c.files.content(done.output_file_id).text.splitlines()
    assert len(out) == 4
    upload, create, retrieve, content = lines_of(gw, k, 4)
    assert (upload["route"], upload["status"]) == ("upload", 200)
    assert (retrieve["route"], retrieve.get("batch_settle")) == ("batch_object", None)
    u = upload["upload"]
    assert (u["file_id"], u["purpose"], u["estimated"], u["requests"], u["input_tokens_est"],
            u["output_tokens"], u["unmetered"], u["recorded"]) == (
        f.id, "batch", True, 4, 40, 200, 0, True)
    assert create["budget"] == [{"id": "roomy", "window": "year", "limit": 100_000,
                                 "reserved": 240, "charged": 240, "remaining": 99_760}]
    assert (create["batch"]["id"], create["batch"]["input_file_id"]) == (b.id, f.id)
    assert content["batch_settle"] == [{
        "id": b.id, "mode": "results", "results": 4, "succeeded": 4, "input_tokens": 40,
        "output_tokens": 80, "settled": True,
        "budgets": [{"id": "roomy", "charged": 240, "now": 120, "change": -120}]}]


def test_openai_batches_the_proxy_cannot_meter_are_refused(gw, stub):
    k = key()
    c = oai(gw, k)
    before = stub.stats().get("/v1/batches", 0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.batches.create(input_file_id="file-elsewhere", endpoint="/v1/chat/completions",
                         completion_window="24h")
    assert e.value.body["message"] == (
        "input file file-elsewhere was not uploaded through this proxy (or is forgotten): "
        "what the batch would spend is not known")
    f = c.files.create(file=("in.jsonl", jsonl([chat_line(0, "roomy-o"), chat_line(
        1, "roomy-o", "/v1/images/generations")])), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    assert e.value.body["message"] == (
        f"input file {f.id} has 1 line(s) this proxy cannot estimate (not JSON, too long, "
        "or not a metered endpoint)")
    assert stub.stats().get("/v1/batches", 0) == before
    recs = lines_of(gw, k, 3)
    assert [(r["rule"], r["status"], r.get("unmetered") is not None) for r in recs] == [
        ("unmetered_batch", 403, True), ("default", 200, False), ("unmetered_batch", 403, True)]


def test_legacy_endpoints_and_choices_are_metered(gw):
    k = key()
    c = oai(gw, k)
    comp = c.completions.create(model="roomy-c", prompt=[PROMPT, PROMPT], n=2, best_of=3,
                                max_tokens=7, extra_headers={"x-stub-output-tokens": "5"})
    assert len(comp.choices) == 4 and comp.usage.completion_tokens == 20
    emb = c.embeddings.create(model="roomy-e", input=[PROMPT, PROMPT])
    assert emb.usage.prompt_tokens == 20
    chat = c.chat.completions.create(model="roomy-n", n=4, max_tokens=30, messages=[
        {"role": "user", "content": PROMPT}], extra_headers={"x-stub-output-tokens": "5"})
    assert len(chat.choices) == 4
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="roomy-n", n=9, messages=[
            {"role": "user", "content": PROMPT}])
    assert e.value.body["message"] == ("the request asks for 9 outputs per prompt; at most 8 "
                                       "are served through this proxy")
    r = httpx.post(gw.url + "/v1/complete", headers={"x-api-key": k, "anthropic-version":
                                                     "2023-06-01"},
                   json={"model": "roomy-t", "prompt": f"\n\nHuman: {PROMPT}\n\nAssistant:",
                         "max_tokens_to_sample": 9})
    assert r.status_code == 200 and r.json()["completion"] == " ".join(["tok"] * 9)
    recs = lines_of(gw, k, 5)
    got = [(r["api"], r.get("choices"), r["budget"][0]["reserved"] if "budget" in r else None,
            r["budget"][0]["charged"] if "budget" in r else None, r["usage_source"],
            r["rule"]) for r in recs]
    assert got == [
        # 2 prompts x best_of 3 outputs of 7, 20 tokens in; 2 x n 2 x 5 out
        ("openai.completions", 6, 20 + 6 * 7, 20 + 20, "json", "default"),
        ("openai.embeddings", None, 20, 20, "json", "default"),
        ("openai.chat", 4, 10 + 4 * 30, 10 + 4 * 5, "json", "default"),
        ("openai.chat", 9, None, None, None, "too_many_choices"),
        # Text Completions report no usage: the output is estimated from the text (35 chars);
        # the prompt is the 62-character transcript
        ("anthropic.complete", None, 16 + 9, 16 + 9, "json_estimate", "default"),
    ]


def test_unknown_posts_are_refused_and_what_spends_nothing_goes_through(gw, stub):
    k = key()
    before = stub.stats().get("/v1/images/generations", 0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        oai(gw, k).images.generate(model="roomy-i", prompt=PROMPT)
    assert e.value.body["code"] == "access_denied"
    assert stub.stats().get("/v1/images/generations", 0) == before
    n = ant(gw, k).messages.count_tokens(model="roomy-a", messages=[
        {"role": "user", "content": PROMPT}])
    assert n.input_tokens == 10
    assert ant(gw, k).models.list().data[0].id == "stub-model"
    with pytest.raises(anthropic.PermissionDeniedError) as e:  # answered in its own format
        ant(gw, k).post("/v1/sessions/s1/events", cast_to=httpx.Response, body={})
    assert e.value.body["error"] == {"type": "permission_error", "message": (
        "POST /v1/sessions/s1/events is not served through this proxy: it cannot be "
        "metered")}
    recs = lines_of(gw, k, 4)
    assert [(r["method"], r["route"], r["rule"], r["status"]) for r in recs] == [
        ("POST", "unknown", "unmetered_path", 403), ("POST", "harmless", "default", 200),
        ("GET", "read", "default", 200), ("POST", "unknown", "unmetered_path", 403)]


def test_websocket_upgrades_are_refused_unless_a_rule_allows_them(gw, stub):
    ws = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13",
          "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}
    before = stub.stats().get("/v1/realtime", 0)
    k = key()
    r = httpx.get(gw.url + "/v1/realtime?model=gpt-realtime",
                  headers={"authorization": f"Bearer {k}", **ws})
    assert r.status_code == 403 and r.json()["error"]["message"] == (
        "protocol upgrades (/v1/realtime) are not served through this proxy: realtime "
        "sessions cannot be metered")
    assert stub.stats().get("/v1/realtime", 0) == before
    rec = lines_of(gw, k, 1)[0]
    assert (rec["route"], rec["upgrade"], rec["rule"]) == ("upgrade", "websocket",
                                                          "unmetered_upgrade")
    r = httpx.get(gw.url + "/v1/realtime?model=gpt-realtime",
                  headers={"authorization": f"Bearer {PARTNER}", **ws})
    assert stub.stats().get("/v1/realtime", 0) == before + 1  # forwarded (the stub says 404)
    assert lines_of(gw, PARTNER, 1)[0]["rule"] == "realtime-partners"


@pytest.mark.redis
def test_a_batch_settles_through_another_replica(stub, tmp_path):
    """Submitted through one replica, its results read through another: the record and the
    budget live in Redis, so the refund lands once, in the shared bucket."""
    url = require_redis()
    prefix = unique_prefix()
    rules = tmp_path / "shared.yaml"
    rules.write_text(RULES + f"state:\n  backend: redis\n  redis_url: \"{url}\"\n"
                             f"  prefix: \"{prefix}\"\n")
    try:
        with proxy(stub.url, rules) as a, proxy(stub.url, rules) as b:
            k = key()
            batch = ant(a, k).messages.batches.create(
                requests=areqs(2, "roomy-r", 100), extra_headers={"x-stub-output-tokens": "20"})
            assert len(list(ant(b, k).messages.batches.results(batch.id))) == 2
            r = ant(a, k).messages.with_raw_response.create(
                model="roomy-r", max_tokens=50, messages=[{"role": "user", "content": PROMPT}])
            assert r.headers["anthropic-ratelimit-tokens-remaining"] == str(
                100_000 - 60 - 60)
            read = next(x for x in lines_of(b, k, 2) if x["route"] == "results")
            assert read["batch_settle"][0]["budgets"] == [
                {"id": "roomy", "charged": 220, "now": 60, "change": -160}]
    finally:
        delete_prefix(url, prefix)
