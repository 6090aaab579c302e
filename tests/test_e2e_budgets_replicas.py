"""End to end: two real `hydraguard run` replicas share token budgets through Redis under
64-way bursts mixing both APIs (Anthropic Messages, OpenAI Chat), JSON and SSE, at the
default state settings; a Redis outage (each replica keeps to its share, DOWN and
RECOVERED logged once); a replica killed with holds outstanding (given back in time)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import threading
import uuid

import httpx
import pytest
import redis

from hydraguard_dev.procs import proxy, wait_until

from .redis_util import RedisServer, delete_prefix, require_redis, unique_prefix

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

BUDGET = 20_000

RULES = """
version: 1
settings:
  trusted_proxies: [127.0.0.1/32]
state:
  backend: redis
  redis_url: "{url}"
  prefix: {prefix}
  replicas: 2
{extra}
clusters:
  - id: acct
    key: [account]
budgets:
  - id: tokens
    windows: [{{per: day, tokens: {budget}}}]
"""

PROMPT = "Summarise a short story about a lighthouse keeper and a storm. " * 3


def rules_file(tmp_path, url: str, prefix: str, extra: str = "", budget: int = BUDGET):
    path = tmp_path / f"{prefix}.yaml"
    path.write_text(RULES.format(url=url, prefix=prefix, extra=extra, budget=budget))
    return path


def request(i: int, key: str, rng: random.Random) -> tuple[str, dict, dict]:
    """Request ``i`` of a burst: Anthropic / OpenAI, JSON / SSE in turn; the stub uses the
    whole output allowance, so the usage is the reservation (up to the input estimate)."""
    n = rng.randint(100, 400)
    stream = i % 4 >= 2
    used = {"x-stub-output-tokens": str(n)}
    body = {"model": "m-burst", "max_tokens": n, "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}]}
    if i % 2 == 0:
        return "/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01",
                                **used}, body
    if stream:
        body["stream_options"] = {"include_usage": True}
    return "/v1/chat/completions", {"authorization": f"Bearer {key}", **used}, body


async def _one(client, url, path, headers, body) -> int:
    try:
        async with client.stream("POST", url + path, json=body, headers=headers) as r:
            async for _ in r.aiter_raw():
                pass
            return r.status_code
    except httpx.HTTPError:
        return -1


def bursts(urls: list[str], key: str, n_bursts: int, size: int = 64, seed: int = 0
           ) -> list[int]:
    """``n_bursts`` bursts of ``size`` concurrent requests, round-robin over ``urls``."""
    async def go() -> list[int]:
        rng = random.Random(seed)
        out: list[int] = []
        limits = httpx.Limits(max_connections=2 * size, max_keepalive_connections=2 * size)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            i = 0
            for _ in range(n_bursts):
                jobs = []
                for _ in range(size):
                    jobs.append(_one(client, urls[i % len(urls)], *request(i, key, rng)))
                    i += 1
                out += await asyncio.gather(*jobs)
        return out

    return asyncio.run(go())


def served(records) -> int:
    """Tokens the upstream served (input + output of every 200)."""
    return sum(r["input_tokens"] + r["output_tokens"] for r in records if r["status"] == 200)


def logged(replicas, n: int) -> list[dict]:
    wait_until(lambda: sum(len(p.lines()) for p in replicas) >= n, 20, f"{n} records")
    return [r for p in replicas for r in p.lines()]


def test_64_way_bursts_on_two_replicas_stay_within_the_budget(stub, tmp_path):
    """Default timeout, breaker and share settings: four 64-way bursts (about four budgets
    of demand) end within 5 % of the budget, and the budget is actually spent."""
    url = require_redis()
    prefix = unique_prefix()
    rules = rules_file(tmp_path, url, prefix)
    try:
        with proxy(stub.url, rules) as a, proxy(stub.url, rules) as b:
            statuses = bursts([a.url, b.url], "sk-burst-" + uuid.uuid4().hex, 4)
            recs = logged((a, b), len(statuses))
            assert sorted(set(statuses)) == [200, 429]
            assert [r["status"] for r in recs if r["status"] != 429] == [200] * \
                statuses.count(200)
            total = served(recs)
            assert 0.9 * BUDGET <= total <= 1.05 * BUDGET, (total, [
                (r.get("state_backend"), r["status"]) for r in recs
                if r.get("state_degraded")])
            assert a.stderr().count("budget state DOWN") == 0
            assert b.stderr().count("budget state DOWN") == 0
    finally:
        delete_prefix(url, prefix)


def test_outage_keeps_each_replica_to_its_share_and_logs_once(stub, tmp_path):
    """Redis stops mid-run: each replica answers from its half of what was left, so the
    whole run stays within the budget; the breaker logs DOWN once and RECOVERED once per
    replica, and the usage served meanwhile reaches Redis once it is back."""
    srv = RedisServer()
    srv.start()
    try:
        rules = rules_file(tmp_path, srv.url, "hgout")
        with proxy(stub.url, rules) as a, proxy(stub.url, rules) as b:
            key = "sk-out-" + uuid.uuid4().hex
            first = bursts([a.url, b.url], key, 1, size=24, seed=1)  # Redis up
            first += bursts([a.url], key, 1, size=1, seed=4)  # each replica sees the level
            first += bursts([b.url], key, 1, size=1, seed=5)
            before = logged((a, b), len(first))
            spent = served(before)
            assert first == [200] * 26 and 4000 < spent < BUDGET / 2
            srv.stop()
            during = bursts([a.url, b.url], key, 3, seed=2)  # ~3 budgets of demand
            recs = logged((a, b), len(first) + len(during))
            local = [[r for r in p.lines() if r.get("state_backend") == "local"]
                     for p in (a, b)]
            assert sum(len(v) for v in local) == len(during)
            for own in local:  # each replica keeps to its half of what Redis said was left
                assert 0 < served(own) <= (BUDGET - spent) / 2 + 0.025 * BUDGET
                assert {r["budget"][0]["limit"] for r in own} == {BUDGET // 2}
            assert served(recs) <= 1.05 * BUDGET
            srv.start()  # same port, empty: the levels were lost with it
            for p in (a, b):
                wait_until(lambda p=p: "budget state RECOVERED" in p.stderr(), 30,
                           "RECOVERED")
            # what the replicas served from their shares is charged to the new Redis
            charged = sum(r["budget"][0]["charged"] for v in local for r in v)
            cluster = local[0][0]["cluster"]
            bucket = f"hgout:v3:{{{cluster}}}:tokens:{cluster}:b"
            c = redis.Redis.from_url(srv.url, decode_responses=True)
            try:
                wait_until(lambda: float(c.hget(bucket, "day:u") or 0) >= charged - 1, 20,
                           "the local usage charged to Redis")
            finally:
                c.close()
            bursts([a.url, b.url], key, 1, size=8, seed=3)
            logged((a, b), len(first) + len(during) + 8)
            for p in (a, b):
                for r in p.lines()[-4:]:  # on Redis again, which knows the outage usage
                    assert "state_degraded" not in r
                    assert r["budget"][0]["remaining"] <= BUDGET - charged + 50
                assert p.stderr().count("budget state DOWN") == 1
                assert p.stderr().count("budget state RECOVERED") == 1
    finally:
        srv.stop()


def _hanging(url: str, key: str, n: int, out: list) -> None:
    body = {"model": "m-hang", "max_tokens": n,
            "messages": [{"role": "user", "content": "hello"}]}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01",
               "x-stub-delay-ms": "30000"}
    with contextlib.suppress(httpx.HTTPError):
        out.append(httpx.post(url + "/v1/messages", json=body, headers=headers,
                              timeout=40).status_code)


def test_holds_of_a_killed_replica_are_given_back_within_the_ttl(stub, tmp_path):
    url = require_redis()
    prefix = unique_prefix()
    rules = rules_file(tmp_path, url, prefix, "  reservation_ttl: 10\n", budget=1000)
    key = "sk-kill-" + uuid.uuid4().hex
    c = redis.Redis.from_url(url, decode_responses=True)

    def held() -> int:  # open holds (not the markers of expired ones)
        return sum(1 for k in c.scan_iter(match=f"{prefix}:*:h", count=1000)
                   for m in c.zrange(k, 0, -1) if not m.startswith("x:"))

    try:
        with proxy(stub.url, rules) as a, proxy(stub.url, rules) as b:
            out: list = []
            threads = [threading.Thread(target=_hanging, args=(a.url, key, 290, out))
                       for _ in range(3)]
            for t in threads:
                t.start()
            wait_until(lambda: held() == 3, 20, "three holds")
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            body = {"model": "m-after", "max_tokens": 500,
                    "messages": [{"role": "user", "content": "hello"}]}
            headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
            r = httpx.post(b.url + "/v1/messages", json=body, headers=headers, timeout=20)
            assert r.status_code == 429  # ~900 of 1000 still held by the dead replica

            def admitted() -> bool:
                return httpx.post(b.url + "/v1/messages", json=body, headers=headers,
                                  timeout=20).status_code == 200

            wait_until(admitted, 10 + 10, "the dead replica's holds given back")
            # b settles its own hold once the response is sent (not before the client sees it)
            wait_until(lambda: held() == 0, 5, "no hold left")
            for t in threads:
                t.join(40)
            assert out == []  # the killed replica never answered them
    finally:
        c.close()
        delete_prefix(url, prefix)
