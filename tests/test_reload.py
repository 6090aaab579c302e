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
INVALID = "rules:\n  - id: version\n    action: dney\n"


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
    assert f"{r}:3:13: rules[0].action: 'dney' is not one of" in msgs[0]
    put(r, V.format(v="v2", geo=GEO))  # back to the running version: no swap needed
    bump(r)
    assert w.poll().policy is None and w.reloads == 1


def test_watcher_sees_a_new_file_in_a_folder(tmp_path):
    d = tmp_path / "rules.d"
    d.mkdir()
    put(d / "a.yaml", "rules:\n  - {id: a, action: deny}\n")
    w = RulesWatcher([str(d)], load_policy(str(d)))
    put(d / "b.yaml", "rules:\n  - {id: b, action: deny}\n")
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

        def health_version() -> str | None:
            return digests.get(httpx.get(f"{gw.url}/__hydraguard/healthz").json()["policy"])

        try:
            for v in ("v2", "v1", "v2"):
                put(r, versions[v])
                wait_until(lambda v=v: health_version() == v, 10, f"reload to {v}")
                time.sleep(0.3)
            put(r, INVALID)
            time.sleep(0.6)  # many polls while the file stays invalid
            bump(r)
            time.sleep(0.3)
            assert health_version() == "v2"  # invalid rules ignored
            put(r, versions["v1"])
            wait_until(lambda: health_version() == "v1", 10, "reload to v1")
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
