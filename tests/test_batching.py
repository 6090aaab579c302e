"""The Gateway's batch desk without mitmproxy: a real Gateway (memory state, real decision
log file) driven the way the addon drives it."""

from __future__ import annotations

import asyncio
import json

from hydraguard.pipeline import Gateway, RequestView, header_getter
from hydraguard.policy import parse_policy

BUDGET = """
clusters:
  - id: acct
    key: [account]
budgets:
  - id: daily
    windows: [{per: day, tokens: 100000}]
"""


def batch_view(models: list[str], n: int = 2) -> RequestView:
    body = json.dumps({"requests": [
        {"custom_id": f"r{i}", "params": {"model": models[i % len(models)], "max_tokens": 100,
                                          "messages": [{"role": "user", "content": "x" * 40}]}}
        for i in range(n)]}).encode()
    return RequestView("POST", "/v1/messages/batches", "192.0.2.1",
                       header_getter({"x-api-key": "sk-1", "anthropic-version": "2023-06-01"}),
                       body=body, request_id="req_b")


def gateway(tmp_path, rules: str) -> Gateway:
    return Gateway(parse_policy(rules), log_path=str(tmp_path / "d.jsonl"), secret=b"s")


def test_a_batch_whose_answer_never_came_stays_charged(tmp_path):
    """The client went away before the upstream answered: the batch may exist upstream (and
    be listed and read later), so its charge is kept, not released."""
    async def go():
        gw = gateway(tmp_path, BUDGET)
        view = batch_view(["claude-x"])
        ex = gw.begin(view, batch=await gw.preparse(view))
        await gw.admit(ex)
        rec = await gw.finish(ex, status=None, error="client disconnected")
        assert rec["budget"] == [{"id": "daily", "window": "day", "limit": 100000,
                                  "reserved": 220, "charged": 220, "remaining": 99780}]
        view = batch_view(["claude-x"])
        ex = gw.begin(view, batch=await gw.preparse(view))
        await gw.admit(ex)
        rec = await gw.finish(ex, status=529, body=b"{}")  # refused upstream: released
        assert rec["budget"][0]["charged"] == 0
        await gw.aclose()

    asyncio.run(go())


def test_models_of_a_batch_must_share_one_cluster(tmp_path):
    async def go():
        gw = gateway(tmp_path, BUDGET.replace("key: [account]", "key: [account, model]"))
        view = batch_view(["claude-x", "claude-y"])
        ex = gw.begin(view, batch=await gw.preparse(view))
        assert (ex.decision.rule, ex.decision.kind, ex.decision.reason) == (
            "bad_body", "invalid_request", "the models of this batch fall in different "
            "budget clusters: submit one batch per model")
        one = batch_view(["claude-x"])
        assert gw.begin(one, batch=await gw.preparse(one)).decision.rule == "default"
        plain = gateway(tmp_path, BUDGET)
        assert plain.begin(view, batch=await plain.preparse(view)).decision.rule == "default"
        await gw.aclose()
        await plain.aclose()

    asyncio.run(go())


def test_tools_without_preparse_parse_anthropic_batches_and_cannot_meter_openai_ones(tmp_path):
    gw = gateway(tmp_path, BUDGET)
    ex = gw.begin(batch_view(["claude-x"], 3))
    assert (ex.facts.batch.requests, ex.facts.input_tokens_est) == (3, 30)
    view = RequestView("POST", "/v1/batches", "192.0.2.1",
                       header_getter({"authorization": "Bearer sk-1"}),
                       body=b'{"input_file_id": "file-1"}', request_id="req_o")
    d = gw.begin(view).decision
    assert (d.rule, d.reason) == ("unmetered_batch", "the batch's input file was not looked up")
    gw.close()
