"""mitmweb with hydraguard: a real `hydraguard run --web` (and a real `mitmweb -s
addon/hydraguard_addon.py`), flows read through mitmweb's JSON API with its access token. Each
flow carries its decision as comment, refusals are marked, and API keys never appear in what
mitmweb serves (flow list, one flow, saved dump) while the upstream got them unchanged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from hydraguard_dev.procs import ROOT, free_port, proxy, wait_until

pytestmark = pytest.mark.e2e

RULES = f"""
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
geoip:
  location: {ROOT}/geoip/demo-city.mmdb
clusters:
  - id: acct
    key: [account]
budgets:
  - id: tight
    when: {{model: "tight-*"}}
    clusters: [acct]
    windows: [{{per: day, tokens: 10}}]
    count: output
rules:
  - id: denied-countries
    region: {{deny_countries: [CN], no_record: allow, unknown_country: allow}}
    action: deny
    deny_as: region
    reason: "Country, region, or territory not supported"
  - id: new-rule
    when: {{model: "watched-*"}}
    action: deny
    shadow: true
    reason: "would refuse watched models"
"""
UI = re.compile(r"mitmweb UI at (http://127\.0\.0\.1:(\d+)/)\?token=([0-9a-f]+)")


class Web:
    """The web UI of a running proxy: base URL and token."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def get(self, path: str, token: bool = True) -> tuple[int, bytes]:
        url = self.base + path.lstrip("/") + (f"?token={self.token}" if token else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read()

    def flows(self) -> list[dict[str, Any]]:
        status, body = self.get("flows")
        assert status == 200, body
        return json.loads(body)


@pytest.fixture(scope="module")
def web(stub, tmp_path_factory):
    rules = tmp_path_factory.mktemp("web") / "rules.yaml"
    rules.write_text(RULES)
    port = free_port()
    with proxy(stub.url, rules, extra=["--web", str(port)]) as p:
        wait_until(lambda: UI.search(p.stderr()), 20, "the mitmweb UI line")
        m = UI.search(p.stderr())
        assert m is not None and int(m.group(2)) == port  # `--web PORT`: on 127.0.0.1
        yield p, Web(m.group(1), m.group(3))


def key() -> str:
    return "sk-ant-test-" + uuid.uuid4().hex


def post(p, path: str, body: dict, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(p.url + path, json=body, headers=headers, timeout=30)


def ant_headers(k: str, ip: str | None = None, **extra: str) -> dict[str, str]:
    h = {"x-api-key": k, "anthropic-version": "2023-06-01", **extra}
    if ip:
        h["x-forwarded-for"] = ip
    return h


def by_request_id(web: Web, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def there() -> bool:
        found[:] = [f for f in web.flows() if f["comment"].endswith(request_id)
                    and "response" in f]
        return bool(found)

    wait_until(there, 10, f"flow {request_id} in mitmweb")
    return found[0]


def header(flow: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in flow["request"]["headers"] if k.lower() == name]


def test_flows_show_decision_marks_and_masked_keys(web, stub) -> None:
    p, ui = web
    k1, k2 = key(), "sk-proj-" + uuid.uuid4().hex
    msg = {"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    r_ok = post(p, "/v1/messages", msg, ant_headers(k1, "192.0.2.3"))
    assert r_ok.status_code == 200
    assert stub.last("/v1/messages")["headers"]["x-api-key"] == k1  # forwarded unchanged
    r_deny = post(p, "/v1/messages", msg, ant_headers(k1, "192.0.2.50"))  # CN in the demo db
    assert r_deny.status_code == 403
    tight = {**msg, "model": "tight-x"}
    assert post(p, "/v1/messages", tight, ant_headers(k1)).status_code == 200
    r_thr = post(p, "/v1/messages", tight, ant_headers(k1))
    assert r_thr.status_code == 429
    r_shadow = post(p, "/v1/messages", {**msg, "model": "watched-x"}, ant_headers(k1))
    assert r_shadow.status_code == 200
    chat = {"model": "gpt-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    r_oai = post(p, "/v1/chat/completions", chat, {"authorization": f"Bearer {k2}"})
    assert r_oai.status_code == 200
    assert stub.last("/v1/chat/completions")["headers"]["authorization"] == f"Bearer {k2}"

    lines = p.wait_lines(6)
    recs = {r["model"] + ":" + str(r["status"]): r for r in lines[-6:]}
    expect = {  # (model:status) -> (mark, comment head)
        "claude-x:200": ("", "allow by default: no rule matched"),
        "claude-x:403": ("⛔", "deny by denied-countries: Country, region, or territory not "
                               "supported"),
        "tight-x:200": ("", "allow by default: no rule matched"),
        "tight-x:429": ("⌛", f"throttle by tight: {recs['tight-x:429']['reason']}"),
        "watched-x:200": ("👀", "deny (shadow) by new-rule: would refuse watched models"),
        "gpt-x:200": ("", "allow by default: no rule matched"),
    }
    assert set(recs) == set(expect)
    for name, (mark, head) in expect.items():
        rec = recs[name]
        flow = by_request_id(ui, rec["request_id"])
        shadow = " | shadow: new-rule" if name.startswith("watched") else ""
        assert flow["comment"] == f"{head} | cluster {rec['cluster']}{shadow} | " \
            f"{rec['request_id']}", name
        assert flow["marked"] == mark, name
        secret = "authorization" if name.startswith("gpt") else "x-api-key"
        assert header(flow, secret) == [f"<masked: {rec['account']}>"], name
    listing = json.dumps(ui.flows())
    assert k1 not in listing and k2 not in listing
    status, dump = ui.get("flows/dump")  # mitmweb's "save": the flow objects themselves
    assert status == 200 and b"<masked: acct_" in dump
    assert k1.encode() not in dump and k2.encode() not in dump


def test_key_masked_while_the_request_is_upstream(web, stub) -> None:
    """mitmweb lists a flow as soon as its headers arrive; while the upstream works on it
    the flow object still holds the key (it must be forwarded), yet mitmweb never shows it."""
    p, ui = web
    k = key()
    msg = {"model": "slow-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    got: list[httpx.Response] = []
    t = threading.Thread(target=lambda: got.append(post(
        p, "/v1/messages", msg, ant_headers(k, **{"x-stub-delay-ms": "3000"}))))
    t.start()
    try:
        seen: list[dict[str, Any]] = []

        def in_flight() -> bool:
            seen[:] = [f for f in ui.flows() if "x-stub-delay-ms" in
                       {h[0] for h in f["request"]["headers"]} and "response" not in f]
            return bool(seen)

        wait_until(in_flight, 10, "the slow flow in mitmweb before its response")
        assert header(seen[0], "x-api-key")[0].startswith("<masked")
        status, raw = ui.get("flows")
        assert status == 200 and k.encode() not in raw
    finally:
        t.join(30)
    assert got and got[0].status_code == 200
    assert stub.last("/v1/messages")["headers"]["x-api-key"] == k


def test_ui_wants_its_token(web) -> None:
    _, ui = web
    assert ui.get("flows", token=False)[0] == 403


def test_mitmweb_script_route(stub, tmp_path: Path) -> None:
    """`mitmweb -s addon/hydraguard_addon.py` loads the same notes and masking."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    port, web_port = free_port(), free_port()
    token = uuid.uuid4().hex
    cmd = [str(Path(sys.executable).with_name("mitmweb")), "-s",
           str(ROOT / "addon" / "hydraguard_addon.py"), "--mode", f"reverse:{stub.url}",
           "--listen-host", "127.0.0.1", "--listen-port", str(port),
           "--set", f"hydraguard_rules={rules}", "--set", f"hydraguard_log={tmp_path / 'd.jsonl'}",
           "--set", "hydraguard_status=off", "--set", "web_open_browser=false",
           "--set", f"web_port={web_port}", "--set", f"web_password={token}"]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={"HYDRAGUARD_ACCOUNT_SECRET": "t", "PATH": "/usr/bin:/bin"})
        try:
            ui = Web(f"http://127.0.0.1:{web_port}/", token)
            wait_until(lambda: ui.get("flows")[0] == 200, 30, "mitmweb")
            k = key()
            r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", timeout=30,
                           headers=ant_headers(k, "192.0.2.50"),
                           json={"model": "m", "max_tokens": 5,
                                 "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 403
            wait_until(lambda: any("response" in f for f in ui.flows()), 10, "the flow")
            (flow,) = ui.flows()
            assert flow["marked"] == "⛔"
            assert flow["comment"].startswith("deny by denied-countries: Country, region")
            assert header(flow, "x-api-key")[0].startswith("<masked: acct_")
            assert k not in json.dumps(flow)
        finally:
            proc.terminate()
            proc.wait(15)
            out.seek(0)
            tail = out.read()[-3000:]
        assert proc.returncode == 0 or b"Traceback" not in tail, tail


def test_mitmdump_does_not_load_the_ui_addon() -> None:
    script = ROOT / "addon" / "hydraguard_addon.py"
    code = ("import runpy, sys\n{pre}m = runpy.run_path({path!r})\n"
            "print([type(a).__name__ for a in m['addons']])")
    for pre, names in (("", ["HydraGuard"]),
                       ("import mitmproxy.tools.web.master\n", ["HydraGuard", "FlowNotes"])):
        out = subprocess.run([sys.executable, "-c", code.format(pre=pre, path=str(script))],
                             capture_output=True, text=True, check=True, timeout=60)
        assert out.stdout.strip() == repr(names)


def test_web_port_in_use_is_a_config_error(stub) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "hydraguard", "run", "--upstream", stub.url,
             "--listen", str(free_port()), "--status", "off", "--web", str(port)],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={"HYDRAGUARD_ACCOUNT_SECRET": "t", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"hydraguard: cannot listen on 127.0.0.1:{port}: the address is already in use by "
        "another process (stop it, or choose another port with --web)")
