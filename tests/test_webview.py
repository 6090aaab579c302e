"""FlowNotes on mitmproxy's test flows: which headers are masked, repeated ones included, and
that nothing happens to a flow hydraguard did not decide."""

from __future__ import annotations

from mitmproxy.test import taddons, tflow

from hydraguard.webview import SECRET_HEADERS, FlowNotes, plain_metadata


def test_mask_replaces_every_value_of_the_configured_headers() -> None:
    notes = FlowNotes()
    with taddons.context(notes) as tctx:
        f = tflow.tflow()
        f.request.headers["x-api-key"] = "sk-ant-one"
        f.request.headers.add("Authorization", "Bearer sk-two")
        f.request.headers.add("authorization", "Bearer sk-three")
        f.request.headers["openai-project"] = "proj_123"
        notes.mask(f)
        assert f.request.headers.get_all("authorization") == ["<masked>", "<masked>"]
        assert f.request.headers["x-api-key"] == "<masked>"
        assert f.request.headers["openai-project"] == "proj_123"  # an id, not a credential
        tctx.options.update(hydraguard_web_mask=["OpenAI-Project"])
        notes.mask(f)
        assert f.request.headers["openai-project"] == "<masked>"
    assert "x-api-key" in SECRET_HEADERS and "authorization" in SECRET_HEADERS


def test_flows_without_a_decision_get_no_comment_or_mark() -> None:
    notes = FlowNotes()
    with taddons.context(notes):
        f = tflow.tflow(resp=True)
        notes.response(f)
        assert (f.comment, f.marked) == ("", "")
        f.metadata["hydraguard"] = {"action": "deny", "account": "acct_x"}  # already plain
        f.metadata["hydraguard_gw"] = object()
        f.request.headers["x-api-key"] = "sk-ant-one"
        notes.response(f)
        plain_metadata(f)
        assert "hydraguard_gw" not in f.metadata
        assert f.request.headers["x-api-key"] == "<masked: acct_x>"
        f.copy()  # what mitmweb's save / duplicate / replay do: must not raise
