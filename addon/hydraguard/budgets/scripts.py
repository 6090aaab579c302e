"""Lua scripts of the Redis backend (kept as strings so no package data is needed).

They mirror ``bucket.py`` exactly.  Each budget key has two Redis keys (``redis_state.py``
names them): the bucket hash ``…:b`` with fields ``<window>:u`` (level) and ``<window>:t``
(timestamp) of every window plus one field ``r:<reservation id>`` (the amount held) per open
reservation, and the hold index ``…:h``, a sorted set of reservation ids scored by expiry
(seconds on the replicas' clock).  One HMGET and one HSET per operation whatever the number
of windows.

Holds expire: a reservation is held until ``now + TTL``; its replica renews the expiry of
its open holds (RENEW) while it runs, so only the holds of a replica that died (or lost
Redis for longer than the TTL) expire.  Every script that touches a bucket first reclaims
its expired holds: their amounts are given back to every window (the level drops by the
amount, never below 0) and each leaves a marker ``x:<id>`` for one more TTL, so a late
settle of it (a replica cut off from Redis that long) charges the real usage in full, once.
The bucket hash lives at least as long as its longest need (max(period, time to drain) +
1 s, and TTL + 1 s after a hold or marker was written): its TTL is only ever extended.  The
hold index expires TTL + 1 s after its last write (nothing in it is due later).

Numbers cross the Lua boundary as strings formatted with ``%.17g`` (Redis would truncate
Lua numbers returned as replies to integers).

Arguments.  ``KEYS`` are pairs (bucket hash, hold index), one pair per budget key; every
key of one call must share one hash slot (one hash tag).  ``ARGV[1]`` is now, ``ARGV[2]``
the hold TTL in seconds; then the script's own arguments (below), with per budget key a
*window block*: the number of windows n, the 2n hash fields (``<name>:u``, ``<name>:t`` per
window, as HMGET wants them), then ``limit, period`` per window.  The client builds the
window blocks once per window set (see ``redis_state.py``), so the scripts do no string
work but formatting numbers.

- RESERVE: ``ARGV[3]`` reservation id, ``ARGV[4]`` the number of budget keys m, then per
  key its amount, window block and *floors*.  Each key is answered on its own (a request's
  budgets are independent answers; the step decides what a refusal releases):
  ``{ok, never_fits, retry, level per window}``.
- SETTLE: ``ARGV[3]`` m, then per key: reservation id, actual, window block.  The hold's
  amount is replaced by ``actual``; an expired hold (a marker) is charged ``actual`` in
  full.  Answers 1 per key, or 0 when the hold was settled before (or is unknown).
- CHARGE (one budget key): ``ARGV[3]`` tokens, the window block and floors: usage a
  replica served from its local share while Redis was down, or an adjustment after the
  fact (a batch settled by its results): negative tokens give back, never below 0.
- PEEK: ``ARGV[3]`` m, then per key its window block; the level per window.
- RENEW: ``ARGV[3:]`` reservation ids (one bucket key): those still held expire TTL from
  now; answers how many moved.

*Floors* are the levels a replica last saw for a key: when it was seen (empty: no floors),
then one level per window.  A window with no state in Redis (it restarted empty, or lost
the key) starts from its floor refilled since, so what was spent before is not forgotten.
A window's state is otherwise gone only once its bucket is full again, when its floor has
refilled to 0 too.
"""

from __future__ import annotations

_COMMON = """
local EPS = 1e-9
local function fmt(x) return string.format('%.17g', x) end
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local hold_ms = math.ceil((ttl + 1) * 1000)
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
-- give back the holds of kb/kx that expired at or before now; the amount given back. An
-- expired hold leaves a marker x:<id> (field and index member) for another TTL, so a late
-- settle of it is still charged, once; expired markers are deleted.
local function reclaim(kb, kx)
  local gone = redis.call('ZRANGEBYSCORE', kx, '-inf', ARGV[1], 'LIMIT', 0, 256)
  if #gone == 0 then return 0 end
  local total, marks = 0, {}
  for _, m in ipairs(gone) do
    if string.sub(m, 1, 2) == 'x:' then
      redis.call('HDEL', kb, m)
    else
      local f = 'r:' .. m
      local a = redis.call('HGET', kb, f)
      if a then
        total = total + tonumber(a)
        redis.call('HDEL', kb, f)
        redis.call('HSET', kb, 'x:' .. m, a)
        marks[#marks + 1] = fmt(now + ttl)
        marks[#marks + 1] = 'x:' .. m
      end
    end
  end
  redis.call('ZREM', kx, unpack(gone))
  if #marks > 0 then
    redis.call('ZADD', kx, unpack(marks))
    extend(kb, hold_ms)
    redis.call('PEXPIRE', kx, hold_ms)
  end
  return total
end
-- a bucket: its window block at ARGV[p]; levels refilled to now, expired holds given back
local function load(kb, kx, p)
  local n = tonumber(ARGV[p])
  local b = {kb = kb, kx = kx, p = p, n = n, lim = {}, per = {}, us = {}, ts = {},
             absent = {}}
  local back = 0
  if kx then back = reclaim(kb, kx) end
  local h = redis.call('HMGET', kb, unpack(ARGV, p + 1, p + 2 * n))
  for i = 1, n do
    local l = tonumber(ARGV[p - 1 + 2 * n + 2 * i])
    local q = tonumber(ARGV[p + 2 * n + 2 * i])
    local u = tonumber(h[2 * i - 1]) or 0
    local t = tonumber(h[2 * i]) or now
    b.absent[i] = not h[2 * i - 1]
    if now > t then
      u = u - (now - t) * (l / q)
      if u < 0 then u = 0 end
      t = now
    end
    if back > 0 then
      u = u - back
      if u < 0 then u = 0 end
    end
    b.lim[i], b.per[i], b.us[i], b.ts[i] = l, q, u, t
  end
  b.back = back
  b.next = p + 1 + 4 * n
  return b
end
-- raise the windows that have no state here (Redis restarted empty, or lost the key) to the
-- floors ARGV[q + 1 .. q + n] seen at time ARGV[q] (no floors: ARGV[q] is empty), refilled
-- since; returns the position after the floors and whether a level was raised
local function floors(b, q)
  if ARGV[q] == '' then return q + 1, false end
  local seen, raised = tonumber(ARGV[q]), false
  for i = 1, b.n do
    if b.absent[i] then
      local f = tonumber(ARGV[q + i])
      if now > seen then f = f - (now - seen) * (b.lim[i] / b.per[i]) end
      if f > b.us[i] then
        b.us[i] = f
        raised = true
      end
    end
  end
  return q + 1 + b.n, raised
end
local function store(b, min_ms, extra_field, extra_value)
  local args = {}
  local keep = 0
  local p = b.p
  for i = 1, b.n do
    args[4 * i - 3] = ARGV[p - 1 + 2 * i]
    args[4 * i - 2] = fmt(b.us[i])
    args[4 * i - 1] = ARGV[p + 2 * i]
    if b.ts[i] == now then args[4 * i] = ARGV[1] else args[4 * i] = fmt(b.ts[i]) end
    local k = b.per[i]
    local drain = b.us[i] / (b.lim[i] / b.per[i])
    if drain > k then k = drain end
    if k > keep then keep = k end
  end
  if extra_field then
    args[#args + 1] = extra_field
    args[#args + 1] = extra_value
  end
  redis.call('HSET', b.kb, unpack(args))
  local ms = math.ceil((keep + 1) * 1000)
  if min_ms and min_ms > ms then ms = min_ms end
  extend(b.kb, ms)
end
local function levels(b, out)
  for i = 1, b.n do out[#out + 1] = fmt(b.us[i]) end
  return out
end
"""

RESERVE = (
    _COMMON
    + """
local rid, m = ARGV[3], tonumber(ARGV[4])
local field = 'r:' .. rid
local expiry = fmt(now + ttl)
local out = {}
local p = 5
for k = 1, m do
  local kb, kx = KEYS[2 * k - 1], KEYS[2 * k]
  local amount_s = ARGV[p]
  local amount = tonumber(amount_s)
  local b = load(kb, kx, p + 1)
  local raised
  p, raised = floors(b, b.next)
  local ok, never, never_retry, retry = 1, 0, 0, 0
  for i = 1, b.n do
    if amount > b.lim[i] then
      never = 1
      if b.per[i] > never_retry then never_retry = b.per[i] end
    end
    local excess = b.us[i] + amount - b.lim[i]
    if excess > EPS then
      ok = 0
      local w = excess / (b.lim[i] / b.per[i])
      if w > retry then retry = w end
    end
  end
  if never == 1 then
    ok = 0
    retry = never_retry
  end
  if ok == 1 then
    retry = 0
    for i = 1, b.n do b.us[i] = b.us[i] + amount end
    store(b, hold_ms, field, amount_s)
    redis.call('ZADD', kx, expiry, rid)
    redis.call('PEXPIRE', kx, hold_ms)  -- nothing in it expires later than now + TTL
  elseif b.back > 0 or raised then
    store(b)
  end
  out[k] = levels(b, {ok, never, fmt(retry)})
end
return out
"""
)

SETTLE = (
    _COMMON
    + """
local m = tonumber(ARGV[3])
local out = {}
local p = 4
for k = 1, m do
  local kb, kx = KEYS[2 * k - 1], KEYS[2 * k]
  local rid, actual = ARGV[p], tonumber(ARGV[p + 1])
  local n = tonumber(ARGV[p + 2])
  local nxt = p + 3 + 4 * n
  local back = reclaim(kb, kx)
  local delta, found = 0, 0  -- settled before, or unknown: nothing to do
  local held = redis.call('HGET', kb, 'r:' .. rid)
  if held then
    redis.call('HDEL', kb, 'r:' .. rid)
    redis.call('ZREM', kx, rid)
    delta, found = actual - tonumber(held), 1
  elseif redis.call('HDEL', kb, 'x:' .. rid) == 1 then
    redis.call('ZREM', kx, 'x:' .. rid)
    delta, found = actual, 1  -- it expired and was given back: charge the usage in full
  end
  if (delta == 0 and back == 0) or (delta <= 0 and redis.call('EXISTS', kb) == 0) then
    out[k] = found
  else
    local b = load(kb, nil, p + 2)
    for i = 1, b.n do
      local u = b.us[i] + delta - back
      if u < 0 then u = 0 end
      b.us[i] = u
    end
    store(b)
    out[k] = 1
  end
  p = nxt
end
return out
"""
)

PEEK = (
    _COMMON
    + """
local m = tonumber(ARGV[3])
local out = {}
local p = 4
for k = 1, m do
  local b = load(KEYS[2 * k - 1], KEYS[2 * k], p)
  p = b.next
  if b.back > 0 then store(b) end
  out[k] = levels(b, {})
end
return out
"""
)

CHARGE = (
    _COMMON
    + """
local tokens = tonumber(ARGV[3])
local b = load(KEYS[1], KEYS[2], 4)
floors(b, b.next)
for i = 1, b.n do
  b.us[i] = b.us[i] + tokens
  if b.us[i] < 0 then b.us[i] = 0 end
end
store(b)
return 1
"""
)

RENEW = (
    _COMMON
    + """
local kb, kx = KEYS[1], KEYS[2]
local expiry = fmt(now + ttl)
local args = {}
for j = 3, #ARGV do
  args[#args + 1] = expiry
  args[#args + 1] = ARGV[j]
end
if #args == 0 then return 0 end
local moved = redis.call('ZADD', kx, 'XX', 'CH', unpack(args))
extend(kb, hold_ms)
redis.call('PEXPIRE', kx, hold_ms)
return moved
"""
)
