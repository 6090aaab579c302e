"""The evidence-set access of the one-script link (link_script.LINK): every evidence set
is one of the script's own keys, in one hash slot (single Redis). On a Redis Cluster the
sets live on slots of their own, read by a step of their own (link_shards.EVIDENCE_STEP)."""

LOCAL_EVIDENCE = r"""
-- evidence sets in this script's keys (KEYS[13..], one per value; one hash slot)
local NV = #KEYS - 12
local function ev_record(i, mx)
  local z = KEYS[13 + i]
  local me1, me0 = acct .. '\t1', acct .. '\t0'
  local old = redis.call('ZMSCORE', z, me1, me0)
  local prev = old[1] or old[2]
  redis.call('ZADD', z, ARGV[1], flagged and me1 or me0)
  if old[flagged and 2 or 1] then redis.call('ZREM', z, flagged and me0 or me1) end
  redis.call('PEXPIRE', z, window_ms)
  if prev and tonumber(prev) >= epoch_start then return true, 0 end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. fmt(horizon))
  local n = redis.call('ZCARD', z)
  if n > mx + 1 then
    redis.call('ZREMRANGEBYRANK', z, 0, n - mx - 2)
    n = mx + 1
  end
  return false, n
end
local function ev_top(i) return redis.call('ZREVRANGE', KEYS[13 + i], 0, K) end
local function ev_shares(i, ask) return redis.call('ZMSCORE', KEYS[13 + i], unpack(ask)) end
"""
