"""ListFile reloading (list parsing and CidrSet: test_addresses*.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydraguard.signals.iplists import ListFile


def test_listfile_reload_and_keep_old(tmp_path: Path, caplog) -> None:
    now = [0.0]
    p = tmp_path / "list.txt"
    p.write_text("192.0.2.0/24\n")
    lf = ListFile(p, "plain", check_interval=10, clock=lambda: now[0])
    assert lf.loaded and lf.contains("192.0.2.5") and not lf.contains("198.51.100.1")

    p.write_text("198.51.100.0/24\n")
    os.utime(p, ns=(1, 10**18))  # make sure mtime changes even on coarse clocks
    assert not lf.check()  # not due yet
    assert lf.get().contains("192.0.2.5")
    now[0] = 11
    assert lf.get().contains("198.51.100.1") and not lf.contains("192.0.2.5")

    # an invalid version keeps the old set and logs exactly one error
    p.write_text("198.51.100.0/24\ngarbage\n")
    os.utime(p, ns=(1, 2 * 10**18))
    with caplog.at_level(logging.ERROR, logger="hydraguard.signals.iplists"):
        for i in range(5):
            now[0] = 30 + 20 * i
            assert not lf.check()
    assert lf.contains("198.51.100.1") and lf.last_error and "garbage" in lf.last_error
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    # empty replacement of a non-empty list is rejected; a missing file keeps the list too
    p.write_text("# nothing\n")
    os.utime(p, ns=(1, 3 * 10**18))
    assert not lf.check(force=True) and lf.contains("198.51.100.1")
    p.unlink()
    assert not lf.check(force=True) and lf.contains("198.51.100.1")
    # a fixed file is picked up again
    p.write_text("203.0.113.0/24\n")
    assert lf.check(force=True) and lf.contains("203.0.113.9") and lf.last_error is None


def test_listfile_missing_at_start(tmp_path: Path) -> None:
    lf = ListFile(tmp_path / "nope.json", "aws", clock=lambda: 0.0)
    assert not lf.loaded and not lf.contains("1.2.3.4") and lf.last_error
