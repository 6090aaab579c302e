"""Hydra linking spread over a Redis Cluster: the link script split into per-slot steps.

On a single Redis one script does everything (``link_script.LINK``). On a Redis Cluster
(``state: {cluster: true}``) the evidence sets get a hash tag each, so they spread over the
masters, and one request takes three steps (``redis_links.RedisLinks._split``):

1. ``PARTNERS`` on the definition's slot ``{links:<definition>}``: the account's partner
   list (read only);
2. ``EVIDENCE`` on each evidence value's own slot ``{links:<definition>:e:<kind>:<id>}``,
   concurrently: record the account, trim, count, and when the value is scored, its
   ``candidates + 1`` most recent members and the members among the partners (with scores);
3. ``LINK_SPLIT`` on the definition's slot: ``link_script.BODY`` (candidates, pair scores,
   union-find) with the evidence of step 2 read from ARGV instead of the sets.

Atomicity: each step is atomic, the three together are not. A request running between
another's steps 2 and 3 may miss (or not yet see) that one's newest evidence member or
partner, exactly as if the two requests had arrived in the other order a moment apart; the
pair scores and the union-find are only ever changed inside step 3 (one slot), so they stay
consistent, and a link missed once is made by the next request of either account. The
union-find and pair scores of one definition stay on one master (a definition's components
span accounts: splitting them would need cross-slot unions).
"""

from __future__ import annotations

from .link_script import BODY, HEAD

__all__ = ["EVIDENCE", "LINK_SPLIT", "PARTNERS"]

PARTNERS = r"""
return redis.call('HGET', KEYS[1], ARGV[1]) or redis.call('HGET', KEYS[2], ARGV[1]) or ''
"""

# KEYS 1 the value's sorted set. ARGV now, window, account, epoch start, candidates, flagged,
# max accounts, then partners. Returns {skip (1/0), n, t, t members and scores (the top),
# then partner members and scores}: exactly what ev_record/ev_top/ev_shares would read.
EVIDENCE = r"""
local z, now, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local acct, epoch_start, K = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local flagged, mx = ARGV[6] == '1', tonumber(ARGV[7])
local horizon = now - window
local me1, me0 = acct .. '\t1', acct .. '\t0'
local old = redis.call('ZMSCORE', z, me1, me0)
local prev = old[1] or old[2]
redis.call('ZADD', z, ARGV[1], flagged and me1 or me0)
if old[flagged and 2 or 1] then redis.call('ZREM', z, flagged and me0 or me1) end
redis.call('PEXPIRE', z, math.ceil(window * 1000))
if prev and tonumber(prev) >= epoch_start then return {'1', '0', '0'} end
redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. string.format('%.17g', horizon))
local n = redis.call('ZCARD', z)
if n > mx + 1 then
  redis.call('ZREMRANGEBYRANK', z, 0, n - mx - 2)
  n = mx + 1
end
local top = redis.call('ZREVRANGE', z, 0, K, 'WITHSCORES')
local out = {'0', tostring(n), tostring(#top / 2)}
for _, x in ipairs(top) do out[#out + 1] = x end
if #ARGV > 7 then
  local ask = {}
  for j = 8, #ARGV do
    ask[#ask + 1] = ARGV[j] .. '\t1'
    ask[#ask + 1] = ARGV[j] .. '\t0'
  end
  local sc = redis.call('ZMSCORE', z, unpack(ask))
  for j, m in ipairs(ask) do
    if sc[j] then
      out[#out + 1] = m
      out[#out + 1] = sc[j]
    end
  end
end
return out
"""

# the evidence of step 2 in ARGV: after the 6 arguments per value, one per value:
# skip, n, t, then member, score pairs ('\n'-separated; the first t pairs are the top)
SPLIT_EVIDENCE = r"""
local NV = (#ARGV - 12) / 7
local EV = {}
local function ev_record(i, mx)
  local b = split(ARGV[12 + 6 * NV + 1 + i], '\n')
  local t, top, sc = tonumber(b[3]), {}, {}
  for j = 0, (#b - 3) / 2 - 1 do
    local m = b[4 + 2 * j]
    if j < t then top[#top + 1] = m end
    sc[m] = b[5 + 2 * j]
  end
  EV[i] = {top = top, sc = sc}
  return b[1] == '1', tonumber(b[2])
end
local function ev_top(i) return EV[i].top end
local function ev_shares(i, ask)
  local out, sc = {}, EV[i].sc
  for j, m in ipairs(ask) do out[j] = sc[m] or false end
  return out
end
"""

LINK_SPLIT = HEAD + SPLIT_EVIDENCE + BODY
