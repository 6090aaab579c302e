"""Budgets of what a request asks for beyond one output (n choices, background responses,
batches): the pure step's amounts, batch refunds that never give back more than was charged,
the record store's once-only settlement, and `adjust` on memory and on a real Redis."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.apis import parse_request
from hydraguard.apis.batches import BatchTally
from hydraguard.apis.usage import Usage
from hydraguard.budgets import MemoryBudgetState, RedisBudgetState, WindowSpec, batch_math
from hydraguard.budgets.records import MemoryRecords
from hydraguard.policy import parse_policy

from .redis_util import FakeClock, delete_prefix, require_redis, unique_prefix
from .test_metering_budgets import facts, metering, run

DAY = WindowSpec("day", 1000, 86_400.0)


def budget_def(text: str):
    return parse_policy("clusters: [{id: c, key: [account]}]\n" + text).budgets.budgets[0]


def batch_facts(reqs: list[tuple[str, int, int]], api: str = "anthropic.batches"):
    """Facts of a batch of (model, input characters, max_tokens) requests."""
    t = BatchTally()
    for model, chars, cap in reqs:
        t.add(parse_request("anthropic.messages", json.dumps({
            "model": model, "max_tokens": cap,
            "messages": [{"role": "user", "content": "x" * chars}]}).encode()))
    f = facts(api=api, model=None, max_output=None, est=0)
    f.batch = t.summary()
    f.model = f.batch.model
    return f


# -- n choices, background responses --------------------------------------------------------

@pytest.mark.parametrize(("max_output", "choices", "deferred", "reserved"), [
    (100, 4, False, 50 + 4 * 100),
    (8000, 4, False, 50 + 4 * 4096),  # each output clamped by max_output_reserve
    (9000, 1, True, 50 + 9000),  # background: no usage will settle it, not clamped
    (100, 128, False, 50 + 128 * 100),
])
def test_every_output_asked_for_is_reserved(max_output, choices, deferred, reserved):
    m, _ = metering("  - id: b\n    windows: [{per: day, tokens: 10000000}]\n")
    f = facts(api="openai.chat", max_output=max_output, est=50)
    f.choices, f.deferred = choices, deferred
    m.resolve_cluster(f)
    adm = run(m.admit(f))
    assert adm.log["budget"][0]["reserved"] == reserved
    run(m.settle(adm, Usage(50, 3 * choices), failed=False))
    assert adm.log["budget"][0]["charged"] == 50 + 3 * choices


def test_capped_retry_caps_every_choice():
    m, _ = metering("  - id: b\n    windows: [{per: day, tokens: 1000}]\n"
                    "    on_exceed: cap_max_tokens\n    cap_to: 50\n")
    f = facts(api="openai.chat", max_output=500, est=10)
    f.choices = 10
    m.resolve_cluster(f)
    adm = run(m.admit(f))
    assert adm.max_output_cap == 50
    assert adm.log["budget"][0]["reserved"] == 10 + 10 * 50


# -- batches in the pure step ---------------------------------------------------------------

def test_the_issue_batch_is_refused_as_a_whole():
    """1,000 tokens a day; 1,000 requests with max_tokens 8192: 8,192,000+ tokens asked."""
    m, _ = metering("  - id: daily\n    windows: [{per: day, tokens: 1000}]\n")
    f = batch_facts([("claude-x", 40, 8192)] * 1000)
    m.resolve_cluster(f)
    adm = run(m.admit(f))
    assert adm.refused and adm.rule == "daily"
    entry = adm.log["budget"][0]
    assert entry["needed"] == 1000 * (10 + 8192) and entry["refused"] is True
    assert adm.reason == ("request needs 8202000 tokens, more than token budget 'daily' "
                          "allows per day (1000)")
    assert adm.retry_after_s == 86400.0


def test_budgets_apply_per_model_with_their_multipliers_and_no_clamp():
    m, _ = metering("""  - id: opus
    when: {model: "claude-opus-*"}
    windows: [{per: day, tokens: 100000000}]
    model_multipliers: {"claude-opus-*": 5}
  - id: all
    windows: [{per: day, tokens: 100000000}]
    count: output
    model_multipliers: {"claude-opus-*": 5}
""")
    f = batch_facts([("claude-opus-4", 400, 8192)] * 3 + [("claude-haiku-4", 40, 100)] * 2)
    m.resolve_cluster(f)
    adm = run(m.admit(f))
    budgets = {e["id"]: e["reserved"] for e in adm.log["budget"]}
    # opus only charges the opus part (the haiku requests cannot dilute or dodge it)
    assert budgets == {"opus": 5 * (3 * 100 + 3 * 8192), "all": 5 * 3 * 8192 + 2 * 100}
    holds = {h.budget.id: h.covers for h in adm.outcome.holds}
    assert holds == {"opus": ("claude-opus-4",), "all": ("claude-opus-4", "claude-haiku-4")}
    run(m.settle(adm, None, failed=False))  # no usage at submission: charged as reserved
    assert [e["charged"] for e in adm.log["budget"]] == [e["reserved"]
                                                         for e in adm.log["budget"]]


def test_a_batch_may_be_capped_and_an_openai_batch_may_not():
    cap = ("  - id: b\n    windows: [{per: day, tokens: 3000}]\n"
           "    on_exceed: cap_max_tokens\n    cap_to: 256\n")
    m, _ = metering(cap)
    f = batch_facts([("claude-x", 40, 8192)] * 10)
    m.resolve_cluster(f)
    adm = run(m.admit(f))
    assert (adm.refused, adm.max_output_cap) == (False, 256)
    assert adm.log["budget"][0]["reserved"] == 10 * (10 + 256)
    m2, _ = metering(cap)
    f = batch_facts([("claude-x", 40, 8192)] * 10, api="openai.batches")
    m2.resolve_cluster(f)
    assert run(m2.admit(f)).refused  # its requests sit in a file the proxy cannot rewrite


# -- refunds --------------------------------------------------------------------------------

@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3000),
                          st.integers(1, 500)), min_size=1, max_size=7), st.integers(1, 7))
def test_unused_refund_never_exceeds_what_any_unused_requests_were_charged(reqs, unused):
    b = budget_def("""budgets:
  - id: x
    windows: [{per: day, tokens: 1000}]
    weights: {input: 0.5, output: 2}
    model_multipliers: {a: 3}
""")
    f = batch_facts(reqs)
    s = f.batch
    lb = batch_math.unused_refund(b, s, s.parts, unused)
    costs = [b.w_input * parse_request("anthropic.messages", json.dumps({
        "model": mo, "max_tokens": cap, "messages": [{"role": "user", "content": "x" * ch}]})
        .encode()).input_tokens_est * b.multiplier(mo) + b.w_output * cap * b.multiplier(mo)
        for mo, ch, cap in reqs]
    k = min(unused, len(reqs))
    assert lb <= min(sum(c) for c in itertools.combinations(costs, k)) + 1e-6
    charged = batch_math.reserve_batch(b, s.parts)[0]
    assert lb <= charged


def test_unused_refund_of_a_uniform_batch_and_requests_not_covered():
    b = budget_def("budgets:\n  - id: x\n    windows: [{per: day, tokens: 9}]\n")
    s = batch_facts([("m", 40, 100)] * 10).batch
    # outputs are exact; an input counts at its histogram bucket's floor (10 here)
    assert batch_math.unused_refund(b, s, s.parts, 4) == 4 * (10 + 100)
    assert batch_math.reserve_batch(b, s.parts) == (10 * 110, 100)
    mixed = batch_facts([("m", 40, 100)] * 2 + [("n", 40, 100)]).batch
    assert batch_math.unused_refund(b, mixed, mixed.parts[:1], 1) == 0  # n not covered


def test_exact_charge_uses_weights_and_the_batch_model_multiplier():
    b = budget_def("""budgets:
  - id: x
    windows: [{per: day, tokens: 9}]
    weights: {cache_read: 0.1}
    model_multipliers: {"claude-opus-*": 5}
""")
    got = batch_math.exact_charge(b, {"claude-opus-4": Usage(100, 20, 0, 1000),
                                      "claude-haiku": Usage(10, 5)})
    assert got == 5 * (100 + 100 + 20) + 15


# -- record store ---------------------------------------------------------------------------

def test_memory_records_settle_once_and_expire():
    clock = FakeClock(100.0)
    r = MemoryRecords(clock, max_records=2)

    async def go():
        await r.put("batch:x", {"requests": 5}, 10, {"a": 500, "b": 90})
        assert await r.settle("batch:x", {"a": 300, "b": 100}, "lower") == {"a": -200, "b": 0}
        assert await r.settle("batch:x", {"a": 300}, "lower") == {"a": 0}  # no second refund
        assert await r.settle("batch:x", {"a": 320, "b": 95}, "exact") == {"a": 20, "b": 5}
        assert await r.settle("batch:x", {"a": 1}, "lower") == {}  # exact is final
        assert (await r.get("batch:x"))[1:] == ({"a": 320, "b": 95}, True)
        clock.advance(10)
        assert await r.get("batch:x") is None
        assert await r.settle("batch:x", {"a": 0}, "exact") is None

    run(go())


def test_memory_adjust_gives_back_down_to_an_empty_bucket():
    clock = FakeClock(1000.0)
    st_ = MemoryBudgetState(clock=clock)

    async def go():
        await st_.reserve("k", (DAY,), 600)
        assert await st_.adjust("k", (DAY,), -200)
        assert (await st_.peek("k", (DAY,)))[0].remaining == 600
        assert await st_.adjust("k", (DAY,), -5000)
        assert (await st_.peek("k", (DAY,)))[0].remaining == 1000
        assert await st_.adjust("k", (DAY,), 1500)  # more than the limit: waits to drain
        assert (await st_.peek("k", (DAY,)))[0].remaining == -500
        assert await st_.adjust("nobody", (DAY,), -10)

    run(go())


# -- Redis ----------------------------------------------------------------------------------

@pytest.fixture
def redis_prefix():
    url = require_redis()
    prefix = unique_prefix()
    yield url, prefix
    delete_prefix(url, prefix)


@pytest.mark.redis
def test_redis_adjust_and_records_shared_by_two_replicas(redis_prefix):
    from hydraguard.budgets.redis_records import RedisRecords

    url, prefix = redis_prefix
    clock = FakeClock(1_700_000_000.0)

    async def go():
        a = RedisBudgetState(url, prefix=prefix, clock=clock)
        b = RedisBudgetState(url, prefix=prefix, clock=clock)
        try:
            r = await a.reserve("k", (DAY,), 900, group="g")
            await a.commit(r.reservation, 900)
            assert await b.adjust("k", (DAY,), -300, group="g")
            assert (await a.peek("k", (DAY,), group="g"))[0].remaining == 400
            assert await b.adjust("k", (DAY,), -5000, group="g")
            assert (await a.peek("k", (DAY,), group="g"))[0].remaining == 1000
            ra, rb = RedisRecords(a), RedisRecords(b)
            assert await ra.put("batch:anthropic:m1", {"requests": 3}, 60, {"daily": 900})
            assert await rb.get("batch:anthropic:m1") == ({"requests": 3}, {"daily": 900},
                                                          False)
            moves = await asyncio.gather(*(
                (ra if i % 2 else rb).settle("batch:anthropic:m1", {"daily": 200}, "lower")
                for i in range(20)))
            assert sorted(m["daily"] for m in moves) == [-700] + [0] * 19  # once only
            assert await rb.settle("batch:anthropic:m1", {"daily": 250}, "exact") == {
                "daily": 50}
            assert await ra.settle("batch:anthropic:m1", {"daily": 0}, "lower") == {}
            assert await ra.get("batch:anthropic:none") is None
            assert await ra.settle("batch:anthropic:none", {"daily": 0}, "exact") is None
        finally:
            await a.close()
            await b.close()

    run(go())
