"""Helpers shared by the bench scripts."""

from __future__ import annotations

import contextlib
import resource
import ssl


def rss_mib() -> float:
    """Resident set size of this process in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def python_client_hello(server_name: str = "api.anthropic.com") -> bytes:
    """The TLS ClientHello record a Python `ssl` client sends (captured with MemoryBIO)."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()
