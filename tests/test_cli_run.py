"""`hydraguard run`: configuration errors in one line with exit status 2, where it listens,
the startup line; `hydraguard health` and the status file; `/__hydraguard/healthz`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from hydraguard.policy import load_policy
from hydraguard.reload import policy_digest
from hydraguard.startup import ConfigError, parse_listen, parse_upstream
from hydraguard_dev.procs import DEV_SECRET, ROOT, free_port, proxy, wait_until

GEO = ROOT / "geoip" / "demo-city.mmdb"
RULES = f"""\
version: 1
geoip: {{location: {GEO}}}
rules:
  - {{id: blocked, when: {{client_ip: [203.0.113.0/24]}}, action: deny}}
"""


def test_listen_without_a_host_means_loopback():
    assert parse_listen("8080") == ("127.0.0.1", 8080)
    assert parse_listen(":8080") == ("127.0.0.1", 8080)
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen("[::]:8443") == ("::", 8443)
    assert parse_listen("localhost:0") == ("localhost", 0)
    for bad, msg in [("x", "--listen wants PORT or HOST:PORT, got 'x'"),
                     ("::1:80", "--listen: write an IPv6 address in brackets, e.g. [::1]:80"),
                     ("70000", "--listen: port 70000 is not between 0 and 65535")]:
        with pytest.raises(ConfigError) as e:
            parse_listen(bad)
        assert str(e.value) == msg


def test_upstream_needs_a_scheme_and_takes_no_path():
    assert parse_upstream("https://api.openai.com") == "https://api.openai.com"
    assert parse_upstream("https://api.openai.com/") == "https://api.openai.com"
    assert parse_upstream("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    for bad, msg in [
        ("127.0.0.1:9000", "--upstream '127.0.0.1:9000' has no scheme: write "
         "https://127.0.0.1:9000 or http://127.0.0.1:9000 (hydraguard does not guess)"),
        ("https://api.openai.com/v1", "--upstream takes no path: use https://api.openai.com "
         "(request paths such as /v1/messages already carry /v1 and are forwarded unchanged)"),
        ("ftp://example.com", "--upstream 'ftp://example.com': the scheme must be http or "
         "https"),
        ("https://", "--upstream 'https://' names no host"),
        ("http://h:99999", "--upstream 'http://h:99999': the port is not a number between 0 "
         "and 65535"),
    ]:
        with pytest.raises(ConfigError) as e:
            parse_upstream(bad)
        assert str(e.value) == msg


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hydraguard", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "HYDRAGUARD_ACCOUNT_SECRET": DEV_SECRET,
                               **(env or {})})


@pytest.mark.e2e
def test_configuration_errors_are_one_line_and_exit_2(tmp_path):
    up = "http://127.0.0.1:9"
    afile = tmp_path / "afile"
    afile.write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        cases = [
            (["--upstream", "127.0.0.1:9000"], "hydraguard: --upstream '127.0.0.1:9000' has "
             "no scheme: write https://127.0.0.1:9000 or http://127.0.0.1:9000 (hydraguard "
             "does not guess)"),
            (["--upstream", "https://api.openai.com/v1"], "hydraguard: --upstream takes no "
             "path: use https://api.openai.com (request paths such as /v1/messages already "
             "carry /v1 and are forwarded unchanged)"),
            (["--upstream", up, "--listen", f"127.0.0.1:{taken}"], "hydraguard: cannot listen "
             f"on 127.0.0.1:{taken}: the address is already in use by another process (stop "
             "it, or choose another port with --listen)"),
            (["--upstream", up, "--listen", str(taken)], "hydraguard: cannot listen on "
             f"127.0.0.1:{taken}: the address is already in use by another process (stop it, "
             "or choose another port with --listen)"),
            (["--upstream", up, "--log", str(afile / "d.jsonl")], "hydraguard: cannot open "
             f"the decision log {afile / 'd.jsonl'}: a part of its folder path is a file, not "
             "a folder"),
            (["--upstream", up, "--status", str(tmp_path / "no" / "s.json")], "hydraguard: "
             f"cannot write the status file {tmp_path / 'no' / 's.json'}: folder "
             f"{tmp_path / 'no'} does not exist"),
            (["--upstream", up, "--listen", "nope"], "hydraguard: --listen wants PORT or "
             "HOST:PORT, got 'nope'"),
        ]
        for args, line in cases:
            out = run_cli("run", *args)
            assert (out.returncode, out.stderr.splitlines(), out.stdout) == (2, [line], ""), args
    out = run_cli("run", "--upstream", up, "--listen", str(free_port()), "--",
                  "--no-such-mitmdump-flag")
    assert out.returncode == 2 and "unrecognized arguments: --no-such-mitmdump-flag" in out.stderr


@pytest.mark.e2e
def test_port_taken_after_the_check_is_still_one_line_and_exit_2():
    """The race the early check cannot see (another process binds in between): mitmproxy's
    own failure comes out as one line, without its hint about mitmdump flags."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "hydraguard.runner", "--mode", "reverse:http://127.0.0.1:9",
             "--listen-host", "127.0.0.1", "--listen-port", str(port)],
            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"hydraguard: reverse proxy to http://127.0.0.1:9 failed to listen on 127.0.0.1:{port} "
        f"with [Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): "
        "[errno 98] address already in use"]


def _outward_address() -> str | None:
    """An address of this machine that is not loopback (None: there is none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the source address
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


@pytest.mark.e2e
def test_a_port_alone_listens_on_loopback_and_one_startup_line_says_so(stub, tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    port, status = free_port(), tmp_path / "status.json"
    err = tmp_path / "err"
    with open(err, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hydraguard", "run", "--upstream", stub.url, "--listen",
             str(port), "--rules", str(rules), "--status", str(status), "--log",
             str(tmp_path / "d.jsonl")], stdout=subprocess.DEVNULL, stderr=fh, cwd=ROOT,
            env={**os.environ, "HYDRAGUARD_ACCOUNT_SECRET": DEV_SECRET})
    try:
        wait_until(lambda: status.exists(), 30, "the status file")
        assert json.loads(status.read_text())["listen"] == [f"http://127.0.0.1:{port}"]
        assert httpx.get(f"http://127.0.0.1:{port}/__hydraguard/healthz").status_code == 200
        outward = _outward_address()
        if outward is not None:
            with pytest.raises(OSError), socket.create_connection((outward, port), timeout=2):
                pass
        digest = policy_digest(load_policy(rules))
        lines = err.read_text().splitlines()
        assert lines[0].startswith("hydraguard: WARNING: DEMO GeoIP data: ")  # demo-city.mmdb
        assert lines[1:] == [
            f"hydraguard: listening on http://127.0.0.1:{port} -> {stub.url}; rules {rules} "
            f"(format 1, version {digest}, 1 rule); geoip location demo-city.mmdb "
            f"(geoip2-city, built 2025-01-01); budget state none; status file {status}"]
    finally:
        proc.terminate()
        proc.wait(10)


def health(*args: str, env: dict | None = None) -> tuple[int, list[str]]:
    out = run_cli("health", *args, env=env)
    return out.returncode, (out.stdout or out.stderr).splitlines()


@pytest.mark.e2e
def test_health_shows_detail_healthz_only_ok_or_degraded(stub, tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    digest = policy_digest(load_policy(rules))
    with proxy(stub.url, rules, extra=["--", "--set", "hydraguard_reload_ms=50"]) as gw:
        r = httpx.get(gw.url + "/__hydraguard/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        rc, lines = health("--status", str(gw.status_path))
        assert rc == 0
        assert lines[0] == "status: ok"
        assert lines[2:] == [
            f"rules: {rules} (format 1, version {digest}, 1 rule, 0 reloads since start)",
            "geoip: location demo-city.mmdb (geoip2-city, built 2025-01-01)",
            "budget state: none (no budgets)",
            f"decision log: {gw.log_path}",
        ]
        assert lines[1].startswith(f"listen: http://127.0.0.1:{gw.port} -> {stub.url} (pid ")
        rules.write_text(RULES.replace("action: deny", "action: dney"))
        wait_until(lambda: gw.status()["status"] == "degraded", 10, "the rejection")
        r = httpx.get(gw.url + "/__hydraguard/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "degraded"})
        rc, lines = health("--status", str(gw.status_path))
        assert rc == 1
        assert lines[:2] == ["status: degraded", "  problem: a rules change on disk was "
                             "rejected; the previous rules stay in force"]
        assert lines[3] == f"rules: {rules} (format 1, version {digest}, 1 rule, 0 reloads " \
            "since start)"
        assert lines[4].startswith("rejected rules change (since 20")
        assert lines[5] == f"  {rules}:4:64: rules[0].action: 'dney' is not one of: allow, " \
            "deny, throttle (did you mean \"deny\"?)"
        doc = json.loads(run_cli("health", "--json", "--status", str(gw.status_path)).stdout)
        assert doc["status"] == "degraded" and doc["rules"]["version"] == digest
        assert doc["geoip"] == [{"role": "location", "path": str(GEO), "loaded": True,
                                 "layout": "geoip2-city", "build_time": "2025-01-01T00:00:00Z",
                                 "error": None}]
        stale = json.loads(gw.status_path.read_text())
    stale["updated_epoch"] = time.time() - 60
    (tmp_path / "hydraguard-1.status.json").write_text(json.dumps(stale))
    rc, lines = health("--port", "1", env={"TMPDIR": str(tmp_path)})  # default path by port
    assert rc == 3 and lines == [
        f"stale: the status file was last written at {stale['updated']}, over 10 s ago (pid "
        f"{stale['pid']}): the proxy is not running or does not respond"]
    rc, lines = health("--status", str(tmp_path / "none.json"))
    assert rc == 2 and lines == [
        f"hydraguard health: no status at {tmp_path / 'none.json'} (no such file): is the "
        "proxy running there? (--port N or --status PATH)"]


@pytest.mark.e2e
def test_state_backend_down_is_degraded(stub, tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text(
        "version: 1\n"
        f"state: {{backend: redis, redis_url: 'redis://127.0.0.1:{free_port()}/0', "
        "on_error: open, timeout_ms: 200}\n"
        "clusters: [{id: acct, key: [account]}]\n"
        "budgets: [{id: b, windows: [{per: day, tokens: 1000}]}]\n")
    with proxy(stub.url, rules) as gw:
        assert httpx.get(gw.url + "/__hydraguard/healthz").json() == {"status": "ok"}
        for _ in range(3):  # the breaker opens after 3 failures in a row
            r = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": "k"}, timeout=10,
                           json={"model": "m", "max_tokens": 5,
                                 "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 200  # open: answered from this replica's local share
        assert httpx.get(gw.url + "/__hydraguard/healthz").json() == {"status": "degraded"}
        wait_until(lambda: gw.status()["status"] == "degraded", 10, "status file")
        rc, lines = health("--status", str(gw.status_path))
        assert rc == 1 and lines[1] == "  problem: the budget state backend is unavailable"
        assert "budget state: redis (DOWN)" in lines


def test_status_file_is_replaced_atomically(tmp_path):
    from hydraguard.status import write_status

    path = tmp_path / "s.json"
    write_status(str(path), {"a": 1})
    inode = path.stat().st_ino
    write_status(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and path.stat().st_ino != inode
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left
