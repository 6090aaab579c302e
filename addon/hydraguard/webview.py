"""hydraguard in mitmweb (and the mitmproxy console): each flow shows its decision, refusals
are marked, and API keys stay out of what the UI shows.

`hydraguard_addon.py` adds `FlowNotes` after the hydraguard addon when a mitmweb or console
master is loaded (`hydraguard run --web`, `mitmweb -s addon/hydraguard_addon.py`); mitmdump
never loads it.

- **Comment** (`flow.comment`, the mitmweb column `comment`): action, rule, reason, cluster,
  shadow rules and the request id of the decision log line, set once the decision is made and
  again when the flow ends.
- **Marks** (`flow.marked`): ⛔ a refusal answered by the proxy (deny), ⌛ a throttle (rule or
  budget), 👀 let through but a shadow rule or shadow budget would have refused it.
- **Masking.** The headers named by the option `hydraguard_web_mask` (API keys:
  `x-api-key`, `authorization`, ...) must reach the upstream as they are, so the flow object
  keeps them until the request has gone upstream. The UI, though, reads flows at any time
  (mitmweb adds a flow to its view when its request headers arrive). Two layers:
  1. what mitmweb serialises for its UI and JSON API (`flow_to_json`, used by `/flows`,
     `/flows/<id>` and the live updates) is masked from the first moment: a wrapper installed
     when this addon starts under mitmweb;
  2. the flow object itself is masked in `responseheaders`, `response` and `error`: by then
     the request was sent upstream (or never will be), so an export, a saved dump or a replay
     of a finished flow carries no key either.
  The mask shows the account id (the HMAC of the key that the decision log uses), never the
  key. OpenAI's `openai-organization` / `openai-project` and Anthropic's version and beta
  headers are identifiers, not credentials, and stay visible; add names to the option to mask
  more. Request and response bodies (prompts, completions) are shown as mitmweb shows them:
  the UI is an operator's tool, on loopback and behind its token.
- **Saving.** At a flow's end its metadata is made plain data (`plain_metadata`), so mitmweb
  can save, export, duplicate and replay it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from mitmproxy import http

log = logging.getLogger("hydraguard")

SECRET_HEADERS = ("authorization", "x-api-key", "api-key", "proxy-authorization",
                  "x-goog-api-key", "cookie")
EXCHANGE_KEY = "hydraguard"  # flow.metadata key of the addon's Exchange (addon.KEY)
GATEWAY_KEY = "hydraguard_gw"  # ... and of its Gateway (addon.GW)
MARKS = {"deny": ":no_entry:", "throttle": ":hourglass:"}
SHADOW_MARK = ":eyes:"
_ACTIVE: list[FlowNotes] = []  # the instance the mitmweb serialiser wrapper asks


def _exchange(flow: http.HTTPFlow) -> Any:
    ex = flow.metadata.get(EXCHANGE_KEY)
    return None if isinstance(ex, dict) else ex  # a dict: the flow is over (plain_metadata)


def masked_value(flow: http.HTTPFlow) -> str:
    """What the UI shows instead of a key: the account id when the request has one."""
    ex = flow.metadata.get(EXCHANGE_KEY)
    account = ex.get("account") if isinstance(ex, dict) else \
        getattr(getattr(ex, "facts", None), "account", None)
    return f"<masked: {account}>" if account else "<masked>"


def plain_metadata(flow: http.HTTPFlow) -> None:
    """Once a flow is over (its last hook, after the hydraguard addon's): replace the
    addon's per-request objects in ``flow.metadata`` (the Exchange, the Gateway: locks, files,
    connections) by a plain summary, so that mitmweb can save, export, duplicate and replay
    the flow (all of them copy the metadata)."""
    ex = flow.metadata.get(EXCHANGE_KEY)
    flow.metadata.pop(GATEWAY_KEY, None)
    if ex is None or isinstance(ex, dict):
        return
    d, f = ex.decision, ex.facts
    flow.metadata[EXCHANGE_KEY] = {
        "action": d.action, "rule": d.rule, "reason": d.reason, "shadow": d.shadow,
        "enforced": d.enforced, "shadow_rules": list(d.shadow_rules), "cluster": f.cluster,
        "account": f.account, "request_id": f.request_id}


def comment_for(ex: Any) -> str:
    """One line for the UI: `deny by rule: reason | cluster ... | shadow: ... | req_...`."""
    d, f = ex.decision, ex.facts
    head = f"{d.action}{' (shadow)' if d.shadow else ''} by {d.rule}"
    parts = [f"{head}: {d.reason}" if d.reason else head]
    if f.cluster:
        parts.append(f"cluster {f.cluster}")
    shadow = list(d.shadow_rules)
    adm = getattr(ex, "admission", None)
    if adm is not None:
        shadow += [b.get("id", "?") for b in adm.outcome.log.get("budget_shadow", ())]
    if shadow:
        parts.append("shadow: " + ", ".join(shadow))
    if f.request_id:
        parts.append(f.request_id)
    return " | ".join(parts)


def mark_for(ex: Any) -> str:
    """The mark of a decision ('' for none)."""
    d = ex.decision
    if d.enforced:
        return MARKS.get(d.action, ":red_circle:")
    adm = getattr(ex, "admission", None)
    shadow_budget = adm is not None and bool(adm.outcome.log.get("budget_shadow"))
    if d.shadow or d.shadow_rules or shadow_budget:
        return SHADOW_MARK
    return ""


class FlowNotes:
    """The addon (see the module docstring). Runs after the hydraguard addon in every hook."""

    def __init__(self) -> None:
        self.names: frozenset[str] = frozenset(SECRET_HEADERS)

    def load(self, loader) -> None:
        loader.add_option("hydraguard_web_mask", Sequence[str], list(SECRET_HEADERS),
                          "Request headers whose values mitmweb / the console never show "
                          "(API keys); forwarded upstream unchanged")

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if "hydraguard_web_mask" in updated:
            self.names = frozenset(n.strip().lower() for n in ctx.options.hydraguard_web_mask
                                   if n.strip())

    def running(self) -> None:
        _ACTIVE[:] = [self]
        if install_display_guard():
            log.info("hydraguard: mitmweb shows flows with %s masked",
                     ", ".join(sorted(self.names)))

    def done(self) -> None:
        if _ACTIVE and _ACTIVE[0] is self:
            _ACTIVE.clear()

    # -- hooks ----------------------------------------------------------------------------
    def request(self, flow: http.HTTPFlow) -> None:
        self._note(flow)  # the decision is made; the headers still go upstream as they are

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._note(flow)
        self.mask(flow)  # the request is upstream by now (or was answered by the proxy)

    def response(self, flow: http.HTTPFlow) -> None:
        self._note(flow)
        self.mask(flow)
        plain_metadata(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._note(flow)
        self.mask(flow)
        plain_metadata(flow)

    def _note(self, flow: http.HTTPFlow) -> None:
        ex = _exchange(flow)
        if ex is None or getattr(ex, "decision", None) is None:
            return
        flow.comment = comment_for(ex)
        mark = mark_for(ex)
        if mark:
            flow.marked = mark

    def mask(self, flow: http.HTTPFlow) -> None:
        """Replace the secret headers' values on the flow object (call only once the request
        went upstream)."""
        headers = flow.request.headers
        present = [n for n in self.names if n in headers]
        if not present:
            return
        value = masked_value(flow)
        for n in present:
            headers.set_all(n, [value] * len(headers.get_all(n)))

    def masked_headers(self, flow: Any, pairs: Sequence[tuple[str, str]]
                       ) -> tuple[tuple[str, str], ...]:
        """``pairs`` (name, value) with the secret values replaced."""
        value = None
        out = []
        for k, v in pairs:
            if k.lower() in self.names:
                if value is None:
                    value = masked_value(flow) if isinstance(flow, http.HTTPFlow) \
                        else "<masked>"
                v = value
            out.append((k, v))
        return tuple(out)


_DEFAULT = FlowNotes()  # the default header names, when no instance is running


def install_display_guard() -> bool:
    """Under mitmweb: wrap its `flow_to_json` so that every flow it serialises for the UI and
    its JSON API has the secret request headers masked, whatever the flow object holds at that
    moment. False when mitmweb is not loaded (mitmdump, console) or the wrapper is already in
    place."""
    app = sys.modules.get("mitmproxy.tools.web.app")
    if app is None or getattr(app.flow_to_json, "hydraguard_guard", False):
        return False
    original = app.flow_to_json

    def flow_to_json(flow: Any) -> dict:
        data = original(flow)
        req = data.get("request")
        if isinstance(req, dict) and "headers" in req:
            notes = _ACTIVE[0] if _ACTIVE else _DEFAULT
            req["headers"] = notes.masked_headers(flow, req["headers"])
        return data

    flow_to_json.hydraguard_guard = True  # type: ignore[attr-defined]
    app.flow_to_json = flow_to_json
    viewer = sys.modules.get("mitmproxy.tools.web.static_viewer")
    if viewer is not None and hasattr(viewer, "flow_to_json"):
        viewer.flow_to_json = flow_to_json
    return True
