"""Helpers shared by the bench scripts."""

from __future__ import annotations

import resource


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
