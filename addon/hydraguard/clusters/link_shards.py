"""Hydra linking spread over a Redis Cluster: the Lua steps of the sharded layout.

On a single Redis one script does everything (``link_script.LINK``). On a Redis Cluster
(``state: {cluster: true}``) nothing of a definition sits on one slot: the evidence sets
have a hash tag each (``{links:<definition>:e:<kind>:<id>}``) and the per-account
structures are cut into ``SHARDS`` shards by a hash of the account, each shard a hash tag
``{links:<definition>:<shard>}`` holding, for the accounts of the shard: first seen (per
period), partner lists, union-find parent pointers, why-records (per epoch), the cluster
sizes of the roots among them, and the pair scores of the pairs whose smaller account is
among them. Python drives a request (clusters/shard_links.py):

1. ``ACCOUNT`` on the account's shard: record its first-seen time; read its partners and,
   for the answer, its parent, size and why-record in this epoch's union-find;
2. ``EVIDENCE_STEP`` on each evidence value's slot, concurrently (record, trim, count, the top
   members and the partners' scores); when no value is scored (the account already has
   them in this epoch: most requests) the answer is step 1's, after at most a few ``HOP``
   reads up to the root: two round trips;
3. for a scored value: ``HOP`` reads (one per shard and tree level, concurrently) find the
   roots of the candidates in the next epoch's union-find; per candidate, strongest first,
   ``CREDIT`` credits the pair on its shard and, at the threshold, the two accounts are
   united in both union-finds (``UNITE`` then ``GROW``, below); then ``PARTNERS_ADD`` and
   ``WHY_ADD`` once per shard touched.

Union is lock-free: ``find`` follows parent pointers; the later root (by first seen, then
id, the same rule as the one script, so every replica names a cluster alike) is hung under
the earlier with a compare-and-set on its shard (``UNITE``: only while it is still a root;
otherwise find again, up to ``shard_links.TRIES`` times). Parent pointers always lead to an
earlier account and a root changes only through ``UNITE``, so trees never form cycles while
first-seen times hold (they do: a first-seen time is forgotten after two idle periods, days,
a union-find after two windows); a find stops after ``shard_links.HOPS`` levels all the
same. Candidates with distinct roots are credited concurrently (``shard_links``). There is
no path compression (trees are shallow: a root goes under another only when two clusters
merge). ``UNITE`` moves the loser's size out atomically and ``GROW`` adds it to the winner
only while that is still a root (else to its new root), so sizes are exact once the unions
of a moment are done, and can read low while one is in flight (and stay low, until the
epoch's union-find expires, if Redis fails between the two).

Atomicity given up (each step is atomic on its slot, a request's steps together are not):
a request running between another's steps may miss (or not yet see) that one's newest
evidence member, partner, pair credit or union, exactly as if the two had arrived in the
other order a moment apart; the pair score is credited atomically (two requests crediting
one pair both count), but which candidates a request credits, and whether a credit links,
is decided on the roots it read; a link missed is made by the next request of either
account. Caps are per shard: ``max_pairs / SHARDS`` pair scores and ``max_why / SHARDS``
why-records per shard and epoch, so they bind a little earlier than the one script's
(skewed shards). On a sequence of requests one at a time the answers are the one script's.
"""

from __future__ import annotations

from .link_pairs import CONSTS, PAIR_FUNCS

__all__ = ["ACCOUNT", "CREDIT", "EVIDENCE_STEP", "GROW", "HOP", "PARTNERS_ADD", "UNITE",
           "WHY_ADD"]

# KEYS first seen (period, previous period), partners (epoch, previous), parent, sizes,
# why-records (epoch), all on the account's shard. ARGV account, now, first-seen TTL (ms).
# Returns {partners, parent, size, why} ('' for none).
ACCOUNT = r"""
local f, acct = KEYS[1], ARGV[1]
if redis.call('HEXISTS', f, acct) == 0 then
  redis.call('HSET', f, acct, redis.call('HGET', KEYS[2], acct) or ARGV[2])
end
redis.call('PEXPIRE', f, tonumber(ARGV[3]) * 2)
return {redis.call('HGET', KEYS[3], acct) or redis.call('HGET', KEYS[4], acct) or '',
        redis.call('HGET', KEYS[5], acct) or '', redis.call('HGET', KEYS[6], acct) or '',
        redis.call('HGET', KEYS[7], acct) or ''}
"""

# KEYS 1 the value's sorted set. ARGV now, window, account, epoch start, candidates, flagged,
# max accounts, then partners. Returns {skip (1/0), n, t, t members and scores (the top),
# then partner members and scores}: what link_evidence.LOCAL_EVIDENCE reads in the script.
EVIDENCE_STEP = r"""
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

# KEYS parent, sizes (one union-find), first seen (period, previous) of one shard. ARGV what
# to read (1: parents, 2: and sizes, 3: and first seen), then accounts of the shard. Returns
# {parent, size, first seen} per account ('' for none or not read).
HOP = r"""
local out, what = {}, tonumber(ARGV[1])
for j = 2, #ARGV do
  local x = ARGV[j]
  out[#out + 1] = redis.call('HGET', KEYS[1], x) or ''
  out[#out + 1] = what > 1 and redis.call('HGET', KEYS[2], x) or ''
  out[#out + 1] = what > 2 and (redis.call('HGET', KEYS[3], x) or
                                redis.call('HGET', KEYS[4], x)) or ''
end
return out
"""

# KEYS parent, sizes on the loser's shard. ARGV loser, winner, TTL (ms). Hangs the loser
# under the winner while it is still a root: its size (moved out), else -1.
UNITE = r"""
local p = redis.call('HGET', KEYS[1], ARGV[1])
if p and p ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '1')
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
"""

# KEYS parent, sizes on the winner's shard. ARGV winner, size to add, TTL (ms). Adds while
# the winner is still a root ('' returned), else returns its parent (the caller goes on).
GROW = r"""
local p = redis.call('HGET', KEYS[1], ARGV[1])
if p and p ~= ARGV[1] then return p end
local s = KEYS[2]
redis.call('HSET', s, ARGV[1], tonumber(redis.call('HGET', s, ARGV[1]) or '1') +
           tonumber(ARGV[2]))
redis.call('PEXPIRE', s, ARGV[3])
return ''
"""

# KEYS pair scores (epoch, previous) on the shard of the pair's smaller account. ARGV now,
# window, multi-exit seconds, max pairs of the shard, pair key, then per credit: kind,
# kind:value id, weight, burst (1/0), both flagged (1/0). Returns {total, counts, flag, new}
# ({''}: a new pair over the cap, not credited).
CREDIT = r"""
local now, window, multi_s = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local horizon = now - window
""" + CONSTS + PAIR_FUNCS + r"""
local q, key = KEYS[1], ARGV[5]
local v = redis.call('HGET', q, key) or redis.call('HGET', KEYS[2], key)
local new = '0'
if not v then
  if redis.call('HLEN', q) >= tonumber(ARGV[4]) then return {''} end
  new = '1'
end
local pr = parse(v)
local total = 0.0
for j = 6, #ARGV, 5 do
  if ARGV[j + 4] == '1' then pr.flag = true end
  total = credit(pr, ARGV[j], ARGV[j + 1], tonumber(ARGV[j + 2]), ARGV[j + 3] == '1')
end
redis.call('HSET', q, key, dump(pr))
redis.call('PEXPIRE', q, math.ceil(window * 1000) * 2)
return {fmt(total), counts_of(pr), pr.flag and '1' or '0', new}
"""

# KEYS partners (epoch, previous) of one shard. ARGV max partners, TTL (ms), then (account,
# partner) pairs in order: each appended to the account's list (the oldest dropped).
PARTNERS_ADD = r"""
local P, lists, order = tonumber(ARGV[1]), {}, {}
for j = 3, #ARGV, 2 do
  local x = ARGV[j]
  local lst = lists[x]
  if lst == nil then
    lst = {}
    local v = redis.call('HGET', KEYS[1], x) or redis.call('HGET', KEYS[2], x) or ''
    for p in string.gmatch(v, '[^\t]+') do lst[#lst + 1] = p end
    lists[x] = lst
    order[#order + 1] = x
  end
  lst[#lst + 1] = ARGV[j + 1]
  if #lst > P then table.remove(lst, 1) end
end
for _, x in ipairs(order) do redis.call('HSET', KEYS[1], x, table.concat(lists[x], '\t')) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS why-records (epoch, next epoch) of one shard. ARGV max why-records of the shard, TTL
# (ms), the account asked about, then (account, why-record) pairs: kept when the account
# has none yet. Returns the asked account's why-record of the epoch ('' for none).
WHY_ADD = r"""
local cap = tonumber(ARGV[1])
for j = 4, #ARGV, 2 do
  for _, w in ipairs({KEYS[1], KEYS[2]}) do
    if redis.call('HLEN', w) < cap then redis.call('HSETNX', w, ARGV[j], ARGV[j + 1]) end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[3]) or ''
"""
