"""Structural check of a MaxMind DB file before hydraguard uses it, and what its metadata says.

A damaged file often still opens (the metadata sits at its end) and answers most lookups; the
damage then shows as a failed or silently empty lookup for some addresses. `verify` looks for
it up front, in three steps, all bounded:

1. the raw search tree: the 16 zero bytes between tree and data section, and every record of
   every node pointing either to another node (never back to the root), to "empty", or into
   the data section (a linear scan, about 0.1 s per 10 MB of tree);
2. lookups spread over the whole address space (IPv4, and IPv6 2000::/3 in IPv6 trees), each
   walking the tree from the root and decoding its record with the layout's decoders;
3. a walk over the whole tree in address order with maxminddb's reader, decoding every record,
   until done or until `budget_s` seconds have passed (a GeoLite2-City takes about a minute:
   the walk then covers its start, steps 1 and 2 the rest).

Run it where blocking is fine: the command line, start-up, the GeoIP refresher's worker
thread; never in a request. A file version (path, mtime, size, inode) that passed is
remembered for the process, so `hydraguard run` and the addon it starts check it once.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

DEMO_MARKER = "hydraguard demo"  # geoip/build.py writes it into every demo description
METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
_METADATA_MAX = 128 * 1024
_CHUNK_NODES = 1 << 16
_V4_SAMPLES = 4096  # one per /12
_V6_SAMPLES = 1024  # one per /13 of 2000::/3
_CHECK_EVERY = 1024  # records walked between clock reads
_MEMO_MAX = 64

Decoder = Callable[[Any], Any]


class StructureError(Exception):
    """The file's structure is damaged (the message says where)."""


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify` checked: `complete` when the walk reached the end of the tree."""

    networks: int  # records decoded by the walk in address order
    samples: int  # spread lookups
    complete: bool
    seconds: float

    def summary(self) -> str:
        """'verified', or how far a walk cut short by its time budget got."""
        if self.complete:
            return "verified"
        return (f"partly verified: tree scanned, {self.samples} spread lookups, first "
                f"{self.networks} networks walked in {self.seconds:.0f} s")


# ---------------------------------------------------------------------------- raw tree scan

_HI = bytes((b >> 4) for b in range(256))
_LO = bytes((b & 0x0F) for b in range(256))


def _records(chunk: bytes, record_size: int) -> array:
    """The node records of `chunk` (whole nodes) as unsigned 32-bit integers."""
    if record_size == 32:
        buf = chunk
    elif record_size == 24:
        buf = bytearray(len(chunk) // 3 * 4)
        buf[1::4], buf[2::4], buf[3::4] = chunk[0::3], chunk[1::3], chunk[2::3]
    else:  # 28: left = nibble(b3 >> 4) b0 b1 b2, right = nibble(b3 & 15) b4 b5 b6
        buf = bytearray(len(chunk) // 7 * 8)
        buf[0::8] = chunk[3::7].translate(_HI)
        buf[1::8], buf[2::8], buf[3::8] = chunk[0::7], chunk[1::7], chunk[2::7]
        buf[4::8] = chunk[3::7].translate(_LO)
        buf[5::8], buf[6::8], buf[7::8] = chunk[4::7], chunk[5::7], chunk[6::7]
    out = array("I")
    out.frombytes(bytes(buf))
    if sys.byteorder == "little":
        out.byteswap()
    return out


def scan_tree(path: str | os.PathLike[str], node_count: int, record_size: int) -> None:
    """Check the raw search tree of a file (step 1). Raises StructureError."""
    if array("I").itemsize != 4 or record_size not in (24, 28, 32):
        raise StructureError(f"unsupported record size {record_size}")
    node_bytes = record_size // 4
    tree_size = node_count * node_bytes
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - _METADATA_MAX))
        tail = fh.read()
        at = tail.rfind(METADATA_MARKER)
        if at < 0:
            raise StructureError("no metadata marker")
        meta_start = size - len(tail) + at
        data_size = meta_start - tree_size - 16
        if data_size < 0:
            raise StructureError(f"search tree of {node_count} nodes does not fit in the file")
        fh.seek(tree_size)
        if fh.read(16) != bytes(16):
            raise StructureError("no data section separator after the search tree")
        limit = node_count + 16 + data_size  # records >= this point past the data section
        fh.seek(0)
        done = 0
        while done < node_count:
            n = min(_CHUNK_NODES, node_count - done)
            chunk = fh.read(n * node_bytes)
            if len(chunk) != n * node_bytes:
                raise StructureError("file shorter than its search tree")
            recs = _records(chunk, record_size)
            hi, lo = max(recs), min(recs)
            if hi >= limit:
                raise StructureError(f"search tree is corrupt: a record of node "
                                     f"{done + recs.index(hi) // 2} points past the data section")
            if lo == 0:
                raise StructureError(f"search tree is corrupt: a record of node "
                                     f"{done + recs.index(0) // 2} points back to the root")
            done += n


# ---------------------------------------------------------------------------- reader checks


def _samples(ip_version: int) -> Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    for i in range(_V4_SAMPLES):  # one address per /12, host part spread by a multiplier
        yield ipaddress.IPv4Address((i << 20) | ((i * 0x9E3779B1) & 0xFFFFF))
    if ip_version == 6:
        for i in range(_V6_SAMPLES):
            yield ipaddress.IPv6Address((1 << 125) | (i << 115)
                                        | ((i * 0x9E3779B97F4A7C15) & ((1 << 115) - 1)))


def _decode(decoders: Iterable[Decoder], record: Any) -> None:
    for d in decoders:
        d(record)


def _what(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def verify(reader: Any, path: str | os.PathLike[str], decoders: tuple[Decoder, ...],
           budget_s: float, clock: Callable[[], float] = time.monotonic) -> Verification:
    """Check an opened file (steps 1-3 above). Raises StructureError naming the damage."""
    meta = reader.metadata()
    scan_tree(path, int(meta.node_count), int(meta.record_size))
    return check_records(reader, decoders, budget_s, clock)


def check_records(reader: Any, decoders: tuple[Decoder, ...], budget_s: float,
                  clock: Callable[[], float] = time.monotonic) -> Verification:
    """Steps 2 and 3 (after `scan_tree`). Raises StructureError naming the damage."""
    meta = reader.metadata()
    t0 = clock()
    n = 0
    for ip in _samples(int(meta.ip_version)):
        try:
            rec = reader.get(ip)
            if rec is not None:
                _decode(decoders, rec)
        except Exception as exc:  # InvalidDatabaseError, RecordError, anything the data does
            raise StructureError(f"lookup of {ip} failed: {_what(exc)}") from exc
        n += 1
    walked, complete = 0, True
    if budget_s > 0:
        deadline = t0 + budget_s
        try:
            for _network, rec in reader:
                _decode(decoders, rec)
                walked += 1
                if walked % _CHECK_EVERY == 0 and clock() >= deadline:
                    complete = False
                    break
        except Exception as exc:
            raise StructureError(f"walk over the tree failed after {walked} networks: "
                                 f"{_what(exc)}") from exc
    else:
        complete = False
    return Verification(walked, n, complete, clock() - t0)


# ---------------------------------------------------------------------------- memo of passes

_passed: dict[tuple[str, Any, float], Verification] = {}


def remembered(path: str, sig: Any, budget_s: float) -> Verification | None:
    """The result of an earlier `verify` of this very file version (None: not checked)."""
    return _passed.get((path, sig, budget_s))


def remember(path: str, sig: Any, budget_s: float, result: Verification) -> None:
    if len(_passed) >= _MEMO_MAX:
        _passed.clear()
    _passed[(path, sig, budget_s)] = result


# ---------------------------------------------------------------------------- metadata facts


def description(meta: Any) -> str:
    """The English (else any) metadata description."""
    d = getattr(meta, "description", None) or {}
    if not isinstance(d, dict):
        return str(d)
    return str(d.get("en") or next(iter(d.values()), ""))


def is_demo(meta: Any) -> bool:
    """A hydraguard demo database (fictional data for documentation ranges), recognised by its
    metadata description, whatever the file is called."""
    d = getattr(meta, "description", None) or {}
    texts = d.values() if isinstance(d, dict) else [str(d)]
    return any(DEMO_MARKER in str(t).lower() for t in texts)


def age_days(build_epoch: int, now: float | None = None) -> float:
    """Days since the database was built."""
    return ((time.time() if now is None else now) - build_epoch) / 86400


def build_date(build_epoch: int) -> str:
    """YYYY-MM-DD (UTC) of a build epoch."""
    return dt.datetime.fromtimestamp(build_epoch, dt.UTC).date().isoformat()


def notices(what: str, demo: bool, build_epoch: int, max_age_days: float,
            now: float | None = None) -> list[str]:
    """Warnings about one loaded database (`what` names it): demo data, or older than
    `max_age_days` (0: never stale). A demo database is not also reported stale."""
    if demo:
        return [f"{what} is a hydraguard demo database: fictional data for documentation "
                "address ranges only; real client addresses have no record in it"]
    age = age_days(build_epoch, now)
    if max_age_days > 0 and age > max_age_days:
        return [f"{what} was built {build_date(build_epoch)}, {age:.0f} days ago (more than "
                f"geoip.max_age_days {max_age_days:g}): regional decisions use stale data; "
                "update it (geoip/README.md)"]
    return []
