"""Debian's Chromium, headless, driven from Python with nothing downloaded.

`scripts/ensure-chromium.sh` installs the `chromium` package (make test and .ci/run call it).
Without a browser the browser tests skip with the reason, unless HYDRAGUARD_REQUIRE_BROWSER=1
(CI), where they fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio"]


def chromium() -> str:
    """The browser's path; skips (or fails, when required) without one."""
    for n in NAMES:
        path = shutil.which(n)
        if path:
            return path
    why = ("no chromium on PATH: scripts/ensure-chromium.sh installs Debian's chromium package "
           "(as root); the report's browser test needs it")
    if os.environ.get("HYDRAGUARD_REQUIRE_BROWSER") == "1":
        pytest.fail(why)
    pytest.skip(why)


def run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
    """Run headless Chromium with a fresh profile and ``args``; raises when it fails."""
    exe = chromium()
    with tempfile.TemporaryDirectory(prefix="hg-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"chromium exited {r.returncode}: {r.stderr[-2000:]!r}")
    return r


def dump_dom(page: Path) -> str:
    """The DOM after the page loaded (``--dump-dom``), serialised."""
    return run(["--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
               ).stdout.decode("utf-8")


def screenshot(page: Path, out: Path, size: tuple[int, int] = (1200, 3000)) -> Path:
    """A PNG of the page's first ``size`` pixels."""
    run([f"--window-size={size[0]},{size[1]}", f"--screenshot={out}",
         page.resolve().as_uri()])
    assert out.exists(), "chromium wrote no screenshot"
    return out
