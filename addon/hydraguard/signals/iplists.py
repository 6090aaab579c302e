"""CIDR list files (plain, Tor exit list, AWS and GCP ranges) and a fast v4+v6 membership set.

`parse_list` never raises: it returns the networks it understood and one error string per
rejected entry. `CidrSet` merges networks into sorted integer ranges and answers `contains`
with one bisect. `ListFile` reloads a file when its (mtime, size, inode) changes and keeps the
previous set when the new content is unreadable or invalid.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

__all__ = ["FORMATS", "CidrSet", "ListFile", "ip_to_int", "parse_list"]

log = logging.getLogger(__name__)

IPNetwork = IPv4Network | IPv6Network
FORMATS = ("plain", "tor", "aws", "gcp")
_NO_FILE = (-1, -1, -1)  # signature of a missing file
_MAX_ERRORS = 100  # error strings kept; the count is reported in the last one


def _err(errors: list[str], msg: str) -> None:
    if len(errors) < _MAX_ERRORS:
        errors.append(msg[:200])
    elif len(errors) == _MAX_ERRORS:
        errors.append("more errors not listed")


def _parse_lines(text: str, addresses_only: bool) -> tuple[list[IPNetwork], list[str]]:
    nets: list[IPNetwork] = []
    errors: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if addresses_only:
            words = line.split()
            if words[0] == "ExitAddress" and len(words) > 1:  # Tor exit-addresses format
                line = words[1]
            elif words[0] in ("ExitNode", "Published", "LastStatus"):
                continue
        try:
            if addresses_only:
                addr = ip_address(line)
                nets.append(ip_network(addr))
            else:
                nets.append(ip_network(line, strict=False))
        except ValueError:
            _err(
                errors,
                f"line {n}: not an {'IP address' if addresses_only else 'IP or CIDR'}: "
                f"{line[:60]!r}",
            )
    return nets, errors


def _parse_json(
    text: str, spec: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[list[IPNetwork], list[str]]:
    nets: list[IPNetwork] = []
    errors: list[str] = []
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        return [], [f"invalid JSON: {e}"]
    if not isinstance(doc, dict):
        return [], ["invalid document: top level is not an object"]
    found = False
    for list_key, fields in spec:
        items = doc.get(list_key)
        if items is None:
            continue
        if not isinstance(items, list):
            _err(errors, f"{list_key}: not a list")
            continue
        found = True
        for i, item in enumerate(items):
            value = None
            if isinstance(item, dict):
                value = next((item[f] for f in fields if f in item), None)
            try:
                if not isinstance(value, str):
                    raise ValueError
                nets.append(ip_network(value, strict=False))
            except ValueError:
                _err(errors, f"{list_key}[{i}]: no valid {' or '.join(fields)}: {value!r:.60}")
    if not found:
        _err(errors, "invalid document: no " + " or ".join(k for k, _ in spec) + " list")
    return nets, errors


_JSON_SPECS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "aws": (("prefixes", ("ip_prefix",)), ("ipv6_prefixes", ("ipv6_prefix",))),
    "gcp": (("prefixes", ("ipv4Prefix", "ipv6Prefix")),),
}


def parse_list(text: str, fmt: str) -> tuple[list[IPNetwork], list[str]]:
    """Parse a list file's text. fmt: "plain" (CIDR or IP per line, `#` comments), "tor" (one IP
    per line, or the exit-addresses format), "aws" (ip-ranges.json), "gcp" (cloud.json).

    Returns (networks, errors); never raises.
    """
    try:
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8", "replace")
        if fmt == "plain":
            return _parse_lines(text, addresses_only=False)
        if fmt == "tor":
            return _parse_lines(text, addresses_only=True)
        if fmt in _JSON_SPECS:
            return _parse_json(text, _JSON_SPECS[fmt])
        return [], [f"unknown list format {fmt!r} (use one of {', '.join(FORMATS)})"]
    except Exception as e:  # defensive: never raise on input
        return [], [f"parse failed: {type(e).__name__}"]


def ip_to_int(ip: object) -> tuple[int, int] | None:
    """(version, integer) of an address; IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as IPv4.

    Accepts str (zone ids `%eth0` are dropped), bytes of length 4/16, or ipaddress objects.
    """
    try:
        if isinstance(ip, str):
            if ":" not in ip:
                return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
            packed = socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])
        elif isinstance(ip, IPv4Address):
            return 4, int(ip)
        elif isinstance(ip, IPv6Address):
            packed = ip.packed
        elif isinstance(ip, bytes | bytearray) and len(ip) in (4, 16):
            packed = bytes(ip)
            if len(packed) == 4:
                return 4, int.from_bytes(packed, "big")
        else:
            return None
        if packed[:12] == b"\x00" * 10 + b"\xff\xff":
            return 4, int.from_bytes(packed[12:], "big")
        return 6, int.from_bytes(packed, "big")
    except (OSError, ValueError, TypeError):
        return None


def _merge(ranges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    ranges.sort()
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in ranges:
        if ends and lo <= ends[-1] + 1:
            if hi > ends[-1]:
                ends[-1] = hi
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


class CidrSet:
    """Immutable set of IPv4 and IPv6 networks merged into sorted ranges; O(log n) `contains`.

    IPv4-mapped IPv6 addresses are looked up as IPv4. Invalid addresses are not contained.
    """

    __slots__ = ("_v4_ends", "_v4_starts", "_v6_ends", "_v6_starts", "size")

    def __init__(self, networks: Iterable[IPNetwork | str] = ()) -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        count = 0
        for net in networks:
            if isinstance(net, str):
                try:
                    net = ip_network(net, strict=False)
                except ValueError:
                    continue
            lo, hi = int(net.network_address), int(net.broadcast_address)
            if net.version == 6 and net.prefixlen >= 96 and (lo >> 32) == 0xFFFF:
                v4.append((lo & 0xFFFFFFFF, hi & 0xFFFFFFFF))  # ::ffff:0:0/96 subnets
            (v4 if net.version == 4 else v6).append((lo, hi))
            count += 1
        self._v4_starts, self._v4_ends = _merge(v4)
        self._v6_starts, self._v6_ends = _merge(v6)
        self.size = count  #: number of networks given (before merging)

    def contains(self, ip: object) -> bool:
        """True if the address (str, bytes or ipaddress object) is in one of the networks."""
        parsed = ip_to_int(ip)
        if parsed is None:
            return False
        version, x = parsed
        if version == 4:
            starts, ends = self._v4_starts, self._v4_ends
        else:
            starts, ends = self._v6_starts, self._v6_ends
        i = bisect_right(starts, x) - 1
        return i >= 0 and x <= ends[i]

    __contains__ = contains

    @property
    def ranges(self) -> int:
        """Number of merged ranges (v4 + v6)."""
        return len(self._v4_starts) + len(self._v6_starts)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"CidrSet(networks={self.size}, ranges={self.ranges})"


class ListFile:
    """A list file turned into a `CidrSet`, reloaded when the file changes.

    `check()` stats the file (at most once per `check_interval` seconds of `clock`, unless
    forced) and reloads when (mtime_ns, size, inode) differ. An unreadable file, a parse error
    (more than `max_errors` bad entries), or an empty result replacing a non-empty set keeps the
    previous set and logs one error per distinct bad file version. Call `check()` from a timer
    so the request path only reads `.cidrs`; `get()` does both for convenience.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str,
        check_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_errors: int = 0,
        *,
        auto_check: bool = True,
    ) -> None:
        """``auto_check=False``: ``get()`` never touches the file; whoever owns the list
        calls ``check()`` (the proxy does, from a worker thread)."""
        self.path = os.fspath(path)
        self.auto_check = auto_check
        self.fmt = fmt
        self.check_interval = check_interval
        self.max_errors = max_errors
        self._clock = clock
        self._sig: tuple[int, int, int] | None = None  # signature of the loaded version
        self._bad_sig: tuple[int, int, int] | None = None  # last version that failed
        self._next_check = float("-inf")
        self.cidrs: CidrSet = CidrSet()
        self.loaded = False  #: True once a version of the file was accepted
        self.last_error: str | None = None
        self.check(force=True)

    def _fail(self, sig: tuple[int, int, int], msg: str) -> None:
        self.last_error = msg
        if sig != self._bad_sig:  # one error per bad version, not one per check
            log.error(
                "ip list %s: %s; keeping the previous list (%d networks)",
                self.path,
                msg,
                self.cidrs.size,
            )
        self._bad_sig = sig

    def check(self, force: bool = False) -> bool:
        """Reload if the file changed; True if a new version was accepted. Never raises."""
        now = self._clock()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self.check_interval
        try:
            st = os.stat(self.path)
        except OSError as e:
            self._fail(_NO_FILE, f"cannot stat: {e.strerror or e}")
            return False
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if sig == self._sig or sig == self._bad_sig:
            return False
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as e:
            self._fail(sig, f"cannot read: {e.strerror or e}")
            return False
        nets, errors = parse_list(text, self.fmt)
        if len(errors) > self.max_errors:
            self._fail(sig, f"{len(errors)} invalid entries, first: {errors[0]}")
            return False
        if not nets and self.cidrs.size:
            self._fail(sig, "no networks in the new version")
            return False
        self.cidrs = CidrSet(nets)
        self._sig = sig
        self._bad_sig = None
        self.loaded = True
        self.last_error = None
        log.info("ip list %s: loaded %d networks", self.path, self.cidrs.size)
        return True

    def get(self) -> CidrSet:
        """`check()` when due (unless ``auto_check`` is off), then the current set."""
        if self.auto_check:
            self.check()
        return self.cidrs

    def contains(self, ip: object) -> bool:
        """Membership in the current set (no I/O)."""
        return self.cidrs.contains(ip)
