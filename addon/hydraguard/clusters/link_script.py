"""The Lua script of shared hydra linking (redis_links.py): one call per request.

It does what `ClusterLinker.observe` does (clusters/linker.py, clusters/scoring.py), step for
step and with the same floating-point arithmetic, on Redis structures:

1. record the account with each evidence value (scored again only when new to it in this
   epoch); 2. candidates: the scored values' most recent accounts, then its partners;
3. drop those linked already, rank the rest by what they share (the most specific network
   value only); 4. credit the pairs of the ``candidates`` strongest, unite
   where a pair reaches the threshold, in this epoch's and the next epoch's union-find.

KEYS  1 parent hash of epoch e (answers now)     2 parent hash of epoch e+1
      3 first-seen hash of this period           4 ... of the previous period
      5 pair scores of epoch e                   6 ... of epoch e-1 (read only)
      7 partners of epoch e                      8 ... of epoch e-1 (read only)
      9 cluster sizes of epoch e                10 ... of epoch e+1
     11 why-records of epoch e                  12 ... of epoch e+1
     13.. per evidence value: the sorted set of its accounts (score: last seen; member
          ``account<TAB>1`` when last seen through a flagged network, else ``<TAB>0``)
ARGV  now, window, account, first-seen TTL (ms), epoch start, candidates, max partners,
      threshold, multi-exit seconds, max pairs, max why-records, flagged (1/0), then per
      evidence value: kind, value id, min accounts, max accounts, weight, flagged weight
Returns {root, cluster size, why-record of the account or ""}.

Pair scores are strings ``flag;group,best,bonus,last,v1,v2,c1,c2,c3,c4,c5;...`` (numbers as
%.17g, so they read back exactly; c1..c5: values credited per kind), partners tab-separated
account lists, why-records ``via<TAB>score<TAB>counts<TAB>flag<TAB>time``
(scoring.encode_why). Only the tails of a tie in time can differ from the memory linker:
Redis orders equal scores by member name, memory by arrival.
"""

from .link_evidence import LOCAL_EVIDENCE  # evidence sets in this script's own keys
from .link_pairs import CONSTS, PAIR_FUNCS  # pair-score arithmetic (shared with link_shards)

# key parts after the hash tag (KEYS above): parent hash, first seen, pair scores, partners,
# cluster sizes, why-records (per epoch; first seen per period), evidence sets
PARENT, FIRST, PAIRS, PARTNERS, SIZES, WHY, EVIDENCE = "p", "f", "q", "n", "s", "w", "e"

HEAD_VARS = r"""
local pcur, pnext, fcur, fprev = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local qcur, qprev, ncur, nprev = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local scur, snext, wcur, wnext = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local acct, first_ttl_ms = ARGV[3], tonumber(ARGV[4])
local epoch_start, K, P = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local threshold, multi_s = tonumber(ARGV[8]), tonumber(ARGV[9])
local max_pairs, max_why, flagged = tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12] == '1'
local window_ms = math.ceil(window * 1000)
local horizon = now - window
""" + CONSTS

HEAD = HEAD_VARS + PAIR_FUNCS + r"""
-- fields of hash `cur`, else of hash `prev` (values by field)
local function hmget2(cur, prev, fields)
  local out, miss = {}, {}
  if #fields == 0 then return out end
  local a = redis.call('HMGET', cur, unpack(fields))
  for j, f in ipairs(fields) do
    if a[j] then out[f] = a[j] else miss[#miss + 1] = f end
  end
  if #miss > 0 then
    local b = redis.call('HMGET', prev, unpack(miss))
    for j, f in ipairs(miss) do
      if b[j] then out[f] = b[j] end
    end
  end
  return out
end
local function seen(a)
  local t = redis.call('HGET', fcur, a) or redis.call('HGET', fprev, a)
  return tonumber(t or ARGV[1])
end
if redis.call('HEXISTS', fcur, acct) == 0 then
  redis.call('HSET', fcur, acct, redis.call('HGET', fprev, acct) or ARGV[1])
end
local function find(h, x)
  local path = {}
  local p = redis.call('HGET', h, x)
  while p and p ~= x do
    path[#path + 1] = x
    x = p
    p = redis.call('HGET', h, x)
  end
  for i = 1, #path - 1 do redis.call('HSET', h, path[i], x) end
  return x
end
-- unite a and b in union-find h (sizes s, why-records w); the (winner, loser) roots
local function union(h, s, w, a, b, why_a, why_b)
  local ra, rb = find(h, a), find(h, b)
  local win, lose
  if ra ~= rb then
    local sa, sb = seen(ra), seen(rb)
    if sb < sa or (sb == sa and rb < ra) then ra, rb = rb, ra end
    redis.call('HSET', h, rb, ra)
    local sz = redis.call('HMGET', s, ra, rb)
    redis.call('HSET', s, ra, tonumber(sz[1] or '1') + tonumber(sz[2] or '1'))
    redis.call('HDEL', s, rb)
    win, lose = ra, rb
  end
  if redis.call('HLEN', w) < max_why then
    redis.call('HSETNX', w, a, why_a)
    redis.call('HSETNX', w, b, why_b)
  end
  return win, lose
end
-- cached for this call: partner lists, pair scores (written back in one HSET each at the
-- end) and roots in the next epoch's union-find (kept right through this call's unions)
local plists, pdirty = {}, {}
local function fetch_partners(xs)
  local need = {}
  for _, x in ipairs(xs) do
    if plists[x] == nil then need[#need + 1] = x end
  end
  local got = hmget2(ncur, nprev, need)
  for _, x in ipairs(need) do
    local v = got[x]
    plists[x] = (v and v ~= '') and split(v, '\t') or {}
  end
end
local function add_partner(a, b)
  local lst = plists[a]
  lst[#lst + 1] = b
  if #lst > P then table.remove(lst, 1) end
  pdirty[a] = true
end
local roots, alias = {}, {}
local function fetch_roots(xs)
  -- level by level: one HMGET per tree level for all of xs (no path compression here)
  local up, todo = {}, {}
  for _, x in ipairs(xs) do
    if roots[x] == nil and up[x] == nil then
      up[x] = x
      todo[#todo + 1] = x
    end
  end
  local walkers = todo
  while #todo > 0 do
    local ask = {}
    for _, x in ipairs(todo) do ask[#ask + 1] = up[x] end
    local ps = redis.call('HMGET', pnext, unpack(ask))
    local again = {}
    for j, x in ipairs(todo) do
      local p = ps[j]
      if p and p ~= up[x] then
        local known = roots[p]
        if known then
          roots[x] = known
        else
          up[x] = p
          again[#again + 1] = x
        end
      else
        roots[x] = up[x]
      end
    end
    todo = again
  end
  for _, x in ipairs(walkers) do roots[up[x]] = roots[x] end
end
local function root_next(x)
  local r = roots[x]
  while alias[r] do r = alias[r] end
  return r
end
"""

BODY = r"""
local me1, me0 = acct .. '\t1', acct .. '\t0'
local wrote_pairs, wrote_uf = false, false
local pairs_dirty = {}
-- 1. record the account with every value; the values new to it in this epoch are scored
local scored = {}
for i = 0, NV - 1 do
  local a = 13 + 6 * i
  local kind, vid = ARGV[a], ARGV[a + 1]
  local mn, mx = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local skip, n = ev_record(i, mx)
  -- scored already in this epoch: nothing more (trimming on new members bounds the set)
  if not skip then
    if n >= mn and n <= mx then
      local r = math.log10(mx / n)
      if r > 0 then
        if r > 1 then r = 1 end
        scored[#scored + 1] = {i = i, kind = kind, vid = kind .. ':' .. vid,
                               wf = tonumber(ARGV[a + 5]) * r, wu = tonumber(ARGV[a + 4]) * r,
                               net = NETWORK[kind] or false}
      end
    end
  end
end
if #scored > 0 then
  -- 2. candidates: each scored value's K most recent other accounts, then the partners
  local pool, inpool = {}, {}
  for _, v in ipairs(scored) do
    local top = ev_top(v.i)
    local got = 0
    for j = 1, #top do
      local c = string.sub(top[j], 1, -3)
      if c ~= acct then
        if not inpool[c] then
          inpool[c] = true
          pool[#pool + 1] = c
        end
        got = got + 1
        if got == K then break end
      end
    end
  end
  fetch_partners({acct})
  for _, p in ipairs(plists[acct]) do
    if not inpool[p] then
      inpool[p] = true
      pool[#pool + 1] = p
    end
  end
  -- 3. what each candidate not linked yet shares (the most specific network value only),
  -- strongest first
  fetch_roots(pool)
  fetch_roots({acct})
  local me = root_next(acct)
  local open = {}
  for _, c in ipairs(pool) do
    if root_next(c) ~= me then open[#open + 1] = c end
  end
  pool = open
  local ask = {}
  for _, c in ipairs(pool) do
    ask[#ask + 1] = c .. '\t1'
    ask[#ask + 1] = c .. '\t0'
  end
  local shares = {}
  if #pool > 0 then
    for vi, v in ipairs(scored) do shares[vi] = ev_shares(v.i, ask) end
  end
  local ranked = {}
  for i, c in ipairs(pool) do
    local credits, pot, net = {}, 0.0, false
    for vi, v in ipairs(scored) do
      local t1, t0 = shares[vi][2 * i - 1], shares[vi][2 * i]
      if (t1 or t0) and not (v.net and net) then
        net = net or v.net
        local both = flagged and t1 ~= false
        local w = both and v.wf or v.wu
        pot = pot + w
        credits[#credits + 1] = {v.kind, v.vid, w, now - tonumber(t1 or t0) <= multi_s, both}
      end
    end
    if #credits > 0 then ranked[#ranked + 1] = {-pot, i, c, credits} end
  end
  table.sort(ranked, function(x, y)
    if x[1] ~= y[1] then return x[1] < y[1] end
    return x[2] < y[2]
  end)
  -- 4. credit the pairs of the K strongest and link
  local keys = {}
  for _, e in ipairs(ranked) do keys[#keys + 1] = pair_key(acct, e[3]) end
  local got = hmget2(qcur, qprev, keys)
  local left, npairs = K, nil
  for _, e in ipairs(ranked) do
    local c, credits = e[3], e[4]
    if left == 0 then break end
    if root_next(c) ~= me then
      left = left - 1
      local key = pair_key(acct, c)
      local v, pr = got[key], nil
      if v then
        pr = parse(v)
      else
        if npairs == nil then npairs = redis.call('HLEN', qcur) end
        if npairs < max_pairs then
          pr = parse(nil)
          npairs = npairs + 1
          fetch_partners({c})
          add_partner(acct, c)
          add_partner(c, acct)
        end
      end
      if pr then
        local total = 0.0
        for _, cr in ipairs(credits) do
          if cr[5] then pr.flag = true end
          total = credit(pr, cr[1], cr[2], cr[3], cr[4])
        end
        pairs_dirty[key] = pr
        wrote_pairs = true
        if total >= threshold - 1e-9 then
          local tail = '\t' .. fmt(total) .. '\t' .. counts_of(pr) .. '\t' ..
            (pr.flag and '1' or '0') .. '\t' .. fmt(now)
          union(pcur, scur, wcur, acct, c, c .. tail, acct .. tail)
          local win, lose = union(pnext, snext, wnext, acct, c, c .. tail, acct .. tail)
          if lose then alias[lose] = win end
          me = root_next(acct)
          wrote_uf = true
        end
      end
    end
  end
end
local hs = {}
for key, pr in pairs(pairs_dirty) do
  hs[#hs + 1] = key
  hs[#hs + 1] = dump(pr)
end
if #hs > 0 then redis.call('HSET', qcur, unpack(hs)) end
hs = {}
for x in pairs(pdirty) do
  hs[#hs + 1] = x
  hs[#hs + 1] = table.concat(plists[x], '\t')
end
if #hs > 0 then redis.call('HSET', ncur, unpack(hs)) end
if wrote_pairs then
  redis.call('PEXPIRE', qcur, window_ms * 2)
  redis.call('PEXPIRE', ncur, window_ms * 2)
end
if wrote_uf then
  for _, k in ipairs({pcur, pnext, scur, snext, wcur, wnext}) do
    redis.call('PEXPIRE', k, window_ms * 2)
  end
end
redis.call('PEXPIRE', fcur, first_ttl_ms * 2)
local root = find(pcur, acct)
return {root, tonumber(redis.call('HGET', scur, root) or '1'),
        redis.call('HGET', wcur, acct) or ''}
"""

LINK = HEAD + LOCAL_EVIDENCE + BODY


def reply_text(v: bytes | str | int) -> str:
    """A Redis reply value of the link layout as text (bytes decoded losslessly)."""
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)
