"""Lua scripts routed to the master of their hash slot on a Redis Cluster.

``ClusterRunner`` has the interface of ``redis_scripts.ScriptRunner`` (``run``, ``close``)
and keeps one lean ``ScriptRunner`` per master, so a script costs what it costs on a single
Redis plus the slot computation of its first key (CRC16, ~1 µs).  Every script of the
budget and link backends names keys of one hash slot only (their ``{…}`` hash tags; see
``redis_keys.py`` and ``clusters/redis_links.py``), which is what Redis Cluster requires of
a script; the slot of the first key picks the master.

- The slot map (``CLUSTER SLOTS``) is read from the seed URL at the first call, then from
  any known master.  A ``MOVED`` reply (resharding, failover) reloads it and the call is
  retried once on the new owner; ``ASK`` (a slot being migrated) and ``CLUSTERDOWN`` /
  ``TRYAGAIN`` are errors for the caller (its timeout, breaker and ``on_error`` answer).
- Connections to a master use the seed URL's scheme, user, password and database options
  with the master's host and port, so TLS (``rediss://``) and ACL users work as on a single
  node.  Masters that leave the map keep their (idle) runner until ``close``.
- A script without keys (the health probe) runs on the first master of the map.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import MovedError

from .redis_scripts import LuaScript, ScriptRunner

__all__ = ["ClusterRunner", "node_url"]

SLOTS = 16384


def node_url(seed: str, host: str, port: int) -> str:
    """``seed`` with its host and port replaced (scheme, credentials and query kept)."""
    parts = urlsplit(seed)
    auth = parts.netloc.rpartition("@")[0]
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{auth}@{hostport}" if auth else hostport))


class ClusterRunner:
    """EVALSHA on the master owning the first key's hash slot (see module doc)."""

    def __init__(self, seed_url: str, *, connect_timeout_s: float,
                 max_connections: int = 64) -> None:
        if urlsplit(seed_url).scheme not in ("redis", "rediss"):
            raise ValueError("a Redis Cluster URL must be redis:// or rediss://")
        self._seed = seed_url
        self._connect_s = connect_timeout_s
        self._max = max_connections
        self._nodes: dict[tuple[str, int], ScriptRunner] = {}
        self._slots: list[tuple[str, int] | None] = [None] * SLOTS
        self._masters: list[tuple[str, int]] = []
        self._loading: asyncio.Lock | None = None
        self._generation = 0
        self._readers: dict[tuple[str, int], aioredis.Redis] = {}

    @property
    def masters(self) -> list[tuple[str, int]]:
        """(host, port) of every master in the current slot map."""
        return list(self._masters)

    def _runner(self, addr: tuple[str, int]) -> ScriptRunner:
        r = self._nodes.get(addr)
        if r is None:
            r = self._nodes[addr] = ScriptRunner.from_url(
                node_url(self._seed, *addr), connect_timeout_s=self._connect_s,
                max_connections=self._max)
        return r

    async def _load_slots(self, seen: int) -> None:
        """Read ``CLUSTER SLOTS`` (once per generation: concurrent callers share it)."""
        if self._loading is None:
            self._loading = asyncio.Lock()
        async with self._loading:
            if self._generation != seen:
                return  # another caller reloaded meanwhile
            urls = [node_url(self._seed, *a) for a in self._masters] + [self._seed]
            last: Exception | None = None
            for url in urls:
                client = aioredis.Redis.from_url(url, socket_connect_timeout=self._connect_s,
                                                 socket_timeout=self._connect_s)
                try:
                    reply = await client.execute_command("CLUSTER SLOTS")
                except Exception as exc:  # next known node
                    last = exc
                    continue
                finally:
                    await client.aclose()
                self._apply(reply, urlsplit(url).hostname or "127.0.0.1")
                return
            raise last if last is not None else ConnectionError("no cluster node")

    def _apply(self, reply, asked: str) -> None:
        slots: list[tuple[str, int] | None] = [None] * SLOTS
        masters: dict[tuple[str, int], None] = {}
        if isinstance(reply, dict):  # redis-py's parsed form: {(start, end): {...}}
            ranges = [(a, b, v["primary"]) for (a, b), v in reply.items()]
        else:
            ranges = [(r[0], r[1], (r[2][0], r[2][1])) for r in reply]
        for start, end, (host, port) in ranges:
            host = host.decode() if isinstance(host, bytes) else str(host)
            addr = (host or asked, int(port))  # an empty host: the node we asked
            masters[addr] = None
            for s in range(int(start), int(end) + 1):
                slots[s] = addr
        self._slots, self._masters = slots, list(masters)
        self._generation += 1

    async def _addr(self, keys: Sequence[str]) -> tuple[str, int]:
        if not self._masters:
            await self._load_slots(self._generation)
        if not keys:
            return self._masters[0]
        addr = self._slots[key_slot(keys[0].encode())]
        if addr is None:
            await self._load_slots(self._generation)
            addr = self._slots[key_slot(keys[0].encode())]
            if addr is None:
                raise ConnectionError(f"slot of {keys[0]!r} is not served (cluster down)")
        return addr

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[str]):
        """The script's reply from the master owning ``keys[0]``'s slot."""
        gen = self._generation
        addr = await self._addr(keys)
        try:
            return await self._runner(addr).run(script, keys, args)
        except MovedError:
            await self._load_slots(gen)  # no-op when another caller reloaded since
            return await self._runner(await self._addr(keys)).run(script, keys, args)

    def _reader(self, addr: tuple[str, int]) -> aioredis.Redis:
        c = self._readers.get(addr)
        if c is None:
            c = self._readers[addr] = aioredis.Redis.from_url(
                node_url(self._seed, *addr), socket_connect_timeout=self._connect_s,
                socket_timeout=self._connect_s, health_check_interval=0)
        return c

    async def client_for(self, key: str) -> aioredis.Redis:
        """A plain client of the master owning ``key``'s slot (reads for the admin
        listener; a ``MOVED`` reply is the caller's error, the next call uses the new map)."""
        return self._reader(await self._addr([key]))

    async def clients(self) -> list[aioredis.Redis]:
        """A plain client of every master (scans for the admin listener)."""
        if not self._masters:
            await self._load_slots(self._generation)
        return [self._reader(a) for a in self._masters]

    async def close(self) -> None:
        """Close every master's idle connections."""
        for r in list(self._nodes.values()):
            await r.close()
        for c in list(self._readers.values()):
            await c.aclose()
