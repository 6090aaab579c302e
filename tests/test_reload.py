"""Hot reload: the watcher, the gateway hand-over, and a real proxy reloading under load."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from hydraguard.pipeline import Gateway
from hydraguard.policy import load_policy
from hydraguard.reload import RulesWatcher, policy_digest
from hydraguard_dev.procs import ROOT, proxy, wait_until

V = """
version: 1
settings: {{trusted_proxies: [127.0.0.1/32]}}
geoip: {{location: {geo}, optional: true}}
rules:
  - id: version
    when: {{path: "/v1/messages"}}
    action: deny
    reason: "{v}"
"""
INVALID = "version: 1\nrules:\n  - id: version\n    action: dney\n"


def put(path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # how editors and deploy tools write


def bump(path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


GEO = str(ROOT /
          "geoip/demo-city.mmdb")


def test_watcher_reports_valid_change_once_and_invalid_once(tmp_path, caplog):
    r = tmp_path / "r.yaml"
    put(r, V.format(v="v1", geo=GEO))
    p1 = load_policy(str(r))
    d1 = policy_digest(p1)
    w = RulesWatcher([str(r)], p1)
    assert not w.changed() and w.poll().policy is None
    put(r, V.format(v="v2", geo=GEO))
    bump(r)
    res = w.poll()
    assert res.policy is not None and res.policy.rules[0].reason == "v2"
    assert res.digest == policy_digest(res.policy) == w.digest != d1
    assert w.poll().policy is None  # nothing changed since
    put(r, INVALID)
    bump(r)
    with caplog.at_level("ERROR", logger="hydraguard"):
        assert w.poll().errors
        bump(r)
        assert w.poll().errors  # same errors: not logged again
    msgs = [m for m in caplog.messages if "invalid" in m]
    assert len(msgs) == 1
    assert f"{r}:4:13: rules[0].action: 'dney' is not one of" in msgs[0]
    put(r, V.format(v="v2", geo=GEO))  # back to the running version: no swap needed
    bump(r)
    assert w.poll().policy is None and w.reloads == 1


def test_watcher_sees_a_new_file_in_a_folder(tmp_path):
    d = tmp_path / "rules.d"
    d.mkdir()
    put(d / "a.yaml", "version: 1\nrules:\n  - {id: a, action: deny}\n")
    w = RulesWatcher([str(d)], load_policy(str(d)))
    put(d / "b.yaml", "version: 1\nrules:\n  - {id: b, action: deny}\n")
    bump(d)
    res = w.poll()
    assert [r.id for r in res.policy.rules] == ["a", "b"]


def test_successor_keeps_geo_and_log_when_unchanged(tmp_path):
    r = tmp_path / "r.yaml"
    put(r, V.format(v="v1", geo=GEO))
    log = tmp_path / "d.jsonl"
    g1 = Gateway(load_policy(str(r)), log_path=str(log), secret=b"s")
    put(r, V.format(v="v2", geo=GEO))
    g2 = g1.successor(load_policy(str(r)))
    assert g2.geo is g1.geo and g2.log is g1.log and g2.secret == b"s"
    assert {"geo", "log"} <= g1.shared
    put(r, V.format(v="v3", geo=GEO).replace("optional: true", "optional: false"))
    g3 = g2.successor(load_policy(str(r)))
    assert g3.geo is not g2.geo
    g3.close()


@pytest.mark.e2e
def test_reload_under_load(stub, tmp_path):
    r = tmp_path / "rules.yaml"
    versions = {v: V.format(v=v, geo=GEO) for v in ("v1", "v2")}
    digests = {}
    for v, text in versions.items():
        put(r, text)
        digests[policy_digest(load_policy(str(r)))] = v
    put(r, versions["v1"])
    with proxy(stub.url, r, extra=["--", "--set", "hydraguard_reload_ms=50"]) as gw:
        stop = threading.Event()
        seen: list[tuple[int, str, str]] = []
        errors: list[BaseException] = []

        def hammer() -> None:
            with httpx.Client(base_url=gw.url, timeout=10) as c:
                while not stop.is_set():
                    try:
                        resp = c.post("/v1/messages", headers={"x-api-key": "k"},
                                      json={"model": "m", "max_tokens": 5,
                                            "messages": [{"role": "user", "content": "x"}]})
                        seen.append((resp.status_code, resp.json()["error"]["message"],
                                     resp.headers.get("request-id", "")))
                    except BaseException as e:
                        errors.append(e)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()

        def health_version() -> str | None:  # the version `hydraguard health` shows
            return digests.get(gw.status()["rules"]["version"])

        def healthz() -> dict:
            return httpx.get(f"{gw.url}/__hydraguard/healthz").json()

        try:
            for v in ("v2", "v1", "v2"):
                put(r, versions[v])
                wait_until(lambda v=v: health_version() == v, 10, f"reload to {v}")
                time.sleep(0.3)
            put(r, INVALID)
            wait_until(lambda: gw.status()["status"] == "degraded", 10, "rejection")
            assert healthz() == {"status": "degraded"}
            time.sleep(0.6)  # many polls while the file stays invalid
            bump(r)
            time.sleep(0.3)
            assert health_version() == "v2"  # invalid rules ignored
            put(r, versions["v1"])
            wait_until(lambda: health_version() == "v1", 10, "reload to v1")
            wait_until(lambda: gw.status()["status"] == "ok", 10, "ok again")
            assert healthz() == {"status": "ok"} and gw.status()["rejected_change"] is None
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert not errors
        assert len(seen) > 50
        assert {s for s, _, _ in seen} == {403}
        assert {m for _, m, _ in seen} == {"v1", "v2"}
        lines = gw.wait_lines(len(seen))
        by_id = {rec["request_id"]: rec for rec in lines}
        for _, msg, rid in seen:  # answer, log line and policy version agree
            rec = by_id[rid]
            assert rec["reason"] == msg and digests[rec["policy"]] == msg
        err = gw.stderr()
        assert err.count("the changed rules are invalid") == 1
        assert "rules[0].action: 'dney' is not one of" in err
        assert err.count("rules reloaded") == 4


async def test_new_geoip_is_opened_and_checked_off_the_loop(tmp_path, monkeypatch, caplog):
    """Rules that switch to other GeoIP databases: the files are opened (and their structure
    checked) in a worker thread; a damaged one keeps the running rules."""
    import threading

    from hydraguard import pipeline
    from hydraguard.reload import next_gateway

    from .geoip_util import build_city, damage_record

    threads = []
    real_open = pipeline.open_geo

    def spy(*a, **k):
        threads.append(threading.current_thread())
        return real_open(*a, **k)

    r = tmp_path / "r.yaml"
    put(r, V.format(v="v1", geo=GEO).replace(", optional: true", ""))
    g1 = Gateway(load_policy(str(r)), log_path=str(tmp_path / "d.jsonl"), secret=b"s",
                 files_in_background=True)
    monkeypatch.setattr(pipeline, "open_geo", spy)
    w = RulesWatcher([str(r)], g1.policy)
    g1.policy_digest = w.digest
    bad = build_city(tmp_path / "bad")
    damage_record(bad)
    put(r, V.format(v="v2", geo=bad).replace(", optional: true", ""))
    bump(r)
    with caplog.at_level("ERROR", logger="hydraguard"):
        assert await next_gateway(w, g1) is None
    assert f"keeping the running rules ({g1.policy_digest}): GeoIP database {bad}: corrupt " \
        "(walk over the tree failed" in caplog.text
    good = build_city(tmp_path / "good")
    put(r, V.format(v="v3", geo=good).replace(", optional: true", ""))
    bump(r)
    g2 = await next_gateway(w, g1)
    assert g2 is not None and g2.geo is not g1.geo and g2.geo.lookup("192.0.2.81").country == "KP"
    assert len(threads) == 2 and threading.main_thread() not in threads
    g2.close()
    g1.close()
# -- fail safe: an emptied, cut-off or half-written rules file never replaces running rules --
ONE = "version: 1\nrules:\n  - {id: a, action: deny}\n"
TWO = ONE + "  - {id: b, action: deny}\n"


@pytest.mark.parametrize("text, error", [
    ("", ":1:1: the rules file is empty"),
    ("# emptied by a deploy script\n", ":1:1: the rules file is only comments"),
    ("rules:\n  - {id: a, action: deny}\n", ":1:1: top level: missing required key 'version'"),
    (ONE + "  - {id: ", ":4:10: invalid YAML"),  # cut mid-line
    (ONE + "  - id: b\n", ":4:5: rules[1]: missing required key 'action'"),  # cut at a line
])
def test_empty_or_cut_off_file_is_rejected_and_the_rules_stay(tmp_path, caplog, text, error):
    r = tmp_path / "r.yaml"
    put(r, TWO)
    w = RulesWatcher([str(r)], load_policy(str(r)), settle_s=0)
    running = w.digest
    r.write_text(text)  # in place, as `> rules.yaml` or a truncating editor does
    bump(r)
    with caplog.at_level("ERROR", logger="hydraguard"):
        res = w.poll()
    assert res.policy is None and f"{r}{error}" in res.errors
    assert w.last_error == res.errors and w.rejected == 1 and w.digest == running
    assert "keeping the running rules" in caplog.text
    put(r, TWO)  # the same rules again: nothing to swap, and no longer rejected
    bump(r)
    assert w.poll().policy is None and w.last_error is None and w.rejected_at is None


def test_a_file_being_written_is_read_once_it_is_stable(tmp_path):
    r = tmp_path / "r.yaml"
    put(r, ONE)
    writes = [lambda: r.write_text(TWO[:len(ONE) + 9]), lambda: r.write_text(TWO)]
    waits: list[float] = []

    def sleep(s: float) -> None:  # the writer goes on while the watcher waits
        waits.append(s)
        if writes:
            writes.pop(0)()
            bump(r)

    w = RulesWatcher([str(r)], load_policy(str(r)), settle_s=0.05, sleep=sleep)
    r.write_text(ONE + "  - {id: b,")  # the writer has begun
    bump(r)
    res = w.poll()
    assert [x.id for x in res.policy.rules] == ["a", "b"] and res.errors is None
    assert waits == [0.05, 0.05, 0.05] and w.rejected == 0  # changed twice, then stable


FAILSAFE = """\
version: 1
settings: {{trusted_proxies: [127.0.0.1/32]}}
log: {{path: {log}}}
clusters:
  - {{id: acct, key: [account]}}
budgets:
  - id: daily
    clusters: [acct]
    windows: [{{per: day, tokens: 100}}]
    count: output
rules:
  - id: blocked-net
    when: {{client_ip: [203.0.113.0/24]}}
    action: deny
"""


@pytest.mark.e2e
def test_emptied_rules_file_keeps_rules_log_file_and_budget_usage(stub, tmp_path):
    r, log = tmp_path / "rules.yaml", tmp_path / "decisions.jsonl"
    text = FAILSAFE.format(log=log)
    r.write_text(text)
    with proxy(stub.url, r, rules_log=log,
               extra=["--", "--set", "hydraguard_reload_ms=50"]) as gw:
        version = gw.status()["rules"]["version"]

        def call(max_tokens: int = 30, ip: str | None = None) -> httpx.Response:
            headers = {"x-api-key": "sk-failsafe", "anthropic-version": "2023-06-01"}
            if ip:
                headers["x-forwarded-for"] = ip
            return httpx.post(gw.url + "/v1/messages", headers=headers, timeout=10,
                              json={"model": "m", "max_tokens": max_tokens,
                                    "messages": [{"role": "user", "content": "x"}]})

        def rejected(error: str) -> bool:
            st = gw.status()
            return st["status"] == "degraded" and error in st["rejected_change"]["errors"]

        first = call()
        assert first.headers["anthropic-ratelimit-tokens-remaining"] == "70"
        r.write_text("")  # emptied in place
        wait_until(lambda: rejected(f"{r}:1:1: the rules file is empty"), 10, "rejection")
        assert httpx.get(gw.url + "/__hydraguard/healthz").json() == {"status": "degraded"}
        assert call(ip="203.0.113.9").status_code == 403  # the previous rules still decide
        second = call()
        assert second.headers["anthropic-ratelimit-tokens-remaining"] == "40"  # usage kept
        r.write_text(text[:text.index("    windows")])  # cut off after a whole line
        wait_until(lambda: rejected("budgets[0]: missing required key 'windows'"), 10,
                   "rejection of the cut-off file")
        assert call().headers["anthropic-ratelimit-tokens-remaining"] == "10"
        r.write_text(text)  # back: the same version, still the same budget state
        wait_until(lambda: gw.status()["status"] == "ok", 10, "ok again")
        assert gw.status()["rules"]["version"] == version
        refused = call()
        assert refused.status_code == 429  # needs 30, 10 left: the usage was never forgotten
        recs = gw.wait_lines(5)
        assert [x["status"] for x in recs] == [200, 403, 200, 200, 429]
        assert {x["policy"] for x in recs} == {version}
        assert '"request_id"' not in gw.stderr()  # no decision line went to stdout
        assert gw.stderr().count("the changed rules are invalid") == 2
