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
