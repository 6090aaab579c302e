"""The decision log file: whole JSON lines, size-based rotation, reopen after close."""

import json

from hydraguard.decision_log import DecisionLog, iso_time, truncate_ip


def test_rotation_keeps_whole_lines_and_backups(tmp_path):
    path = tmp_path / "d.jsonl"
    log = DecisionLog(str(path), max_bytes=200, backups=2)
    for i in range(12):
        log.write({"i": i, "pad": "x" * 40, "text": "ü"})
    log.close()
    files = [path, tmp_path / "d.jsonl.1", tmp_path / "d.jsonl.2"]
    assert not (tmp_path / "d.jsonl.3").exists()
    seen = []
    for f in reversed(files):
        raw = f.read_bytes()
        assert len(raw) <= 200 and raw.endswith(b"\n")
        seen += [json.loads(x)["i"] for x in raw.decode().splitlines()]
    # lines are 69-70 bytes: 2 fit in 200, so 3 files keep the newest 6 lines
    assert seen == list(range(6, 12))


def test_write_after_close_reopens(tmp_path):
    path = tmp_path / "d.jsonl"
    log = DecisionLog(str(path))
    log.write({"a": 1})
    log.close()
    log.write({"a": 2})
    log.close()
    assert [json.loads(x)["a"] for x in path.read_text().splitlines()] == [1, 2]


def test_stdout(capsys):
    DecisionLog("-").write({"a": "ü"})
    assert capsys.readouterr().out == '{"a":"ü"}\n'


def test_helpers():
    import ipaddress

    assert truncate_ip(ipaddress.ip_address("192.0.2.77")) == "192.0.2.0/24"
    assert truncate_ip(ipaddress.ip_address("2001:db8:1:2::5")) == "2001:db8:1:2::/64"
    assert iso_time(0.5) == "1970-01-01T00:00:00.500Z"


def test_ts_and_duration_start_when_the_request_arrives(tmp_path):
    """`ts` is the arrival stamp the front end gives (mitmproxy's timestamp_start); the
    duration counts from it, so it always covers the decision (decision_us)."""
    import asyncio

    from hydraguard.pipeline import Gateway, RequestView, header_getter
    from hydraguard.policy import parse_policy

    now = [1_700_000_010.0]
    gw = Gateway(parse_policy("version: 1\n"), log_path=str(tmp_path / "d.jsonl"),
                 secret=b"s", clock=lambda: now[0])
    arrived = 1_700_000_007.25  # the body took 2.75 s to upload
    body = b'{"model": "m", "max_tokens": 5, "messages": []}'
    view = RequestView("POST", "/v1/messages", "192.0.2.1",
                       header_getter({"x-api-key": "k", "content-type": "application/json"}),
                       body=body, request_id="req_1", arrived=arrived)
    ex = gw.begin(view)
    now[0] += 0.5  # the upstream answers
    rec = asyncio.run(gw.finish(ex, status=200))
    gw.close()
    assert rec["ts"] == iso_time(arrived) == "2023-11-14T22:13:27.250Z"
    assert rec["duration_ms"] == 3250.0 >= rec["decision_us"] / 1000
    assert json.loads((tmp_path / "d.jsonl").read_text())["ts"] == rec["ts"]
