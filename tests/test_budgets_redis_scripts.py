"""The lean script runner: RESP packing, NOSCRIPT recovery, stale and cancelled connections."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from hydraguard.budgets.redis_scripts import LuaScript, ScriptRunner, pack

try:
    from redis_util import redis_server, require_redis
except ImportError:  # tests/ turned into a package
    from tests.redis_util import redis_server, require_redis

_conn = aioredis.Connection()


@given(st.lists(st.one_of(st.text(), st.binary(), st.integers()), max_size=20))
def test_pack_is_what_redis_py_sends(args):
    assert pack("EVALSHA", *args) == b"".join(_conn.pack_command("EVALSHA", *args))


def test_pack_exact_bytes():
    assert pack("GET", "k€", 12) == b"*3\r\n$3\r\nGET\r\n$4\r\nk\xe2\x82\xac\r\n$2\r\n12\r\n"


ECHO = LuaScript("return {KEYS[1], ARGV[1], #ARGV}")


@pytest.mark.redis
async def test_noscript_is_loaded_then_retried_and_connections_reused():
    url = require_redis()
    sync = redis.Redis.from_url(url)
    runner = ScriptRunner.from_url(url, connect_timeout_s=1.0)
    try:
        sync.script_flush()
        assert await runner.run(ECHO, ["k"], ["a", "b"]) == [b"k", b"a", 2]
        assert sync.script_exists(ECHO.sha) == [True]
        assert await runner.run(ECHO, ["k2"], ["x"]) == [b"k2", b"x", 1]
        assert len(runner._idle) == 1  # one sequential caller: one connection, reused
        sync.script_flush()  # as after a Redis restart
        assert await runner.run(ECHO, ["k3"], ["y"]) == [b"k3", b"y", 1]
    finally:
        await runner.close()
        sync.close()


@pytest.mark.redis
async def test_cancelled_call_never_returns_its_connection():
    url = require_redis()
    runner = ScriptRunner.from_url(url, connect_timeout_s=1.0)
    slow = LuaScript("local t = redis.call('TIME') local e = t[1] * 1e6 + t[2] + 200000 "
                     "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= e return 1")
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await runner.run(slow, ["k"], [])
        assert runner._idle == []  # its late reply must not reach the next caller
        assert await runner.run(ECHO, ["k"], ["z"]) == [b"k", b"z", 1]
    finally:
        await runner.close()


@pytest.mark.redis
async def test_stale_idle_connection_after_restart_is_replaced():
    require_redis()
    with redis_server() as srv:
        runner = ScriptRunner.from_url(srv.url, connect_timeout_s=1.0)
        try:
            assert await runner.run(ECHO, ["k"], ["1"]) == [b"k", b"1", 1]
            srv.stop()
            srv.start()
            assert await runner.run(ECHO, ["k"], ["2"]) == [b"k", b"2", 1]
        finally:
            await runner.close()


@pytest.mark.redis
async def test_connections_bounded_by_max_connections():
    url = require_redis()
    pool = aioredis.ConnectionPool.from_url(url)
    made = []

    def make():
        made.append(pool.make_connection())
        return made[-1]

    runner = ScriptRunner(make, max_connections=2)
    try:
        replies = await asyncio.gather(*(runner.run(ECHO, [f"k{i}"], ["v"]) for i in range(12)))
        assert replies == [[f"k{i}".encode(), b"v", 1] for i in range(12)]
        assert len(made) == 2  # the other ten calls waited for one of the two
        assert len(runner._idle) == 2
    finally:
        await runner.close()
