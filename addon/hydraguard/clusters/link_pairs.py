"""The pair-score arithmetic in Lua (scoring.Pair, line for line, with the same floating-point
operations), shared by the one link script (link_script.py) and the sharded layout's pair
credit (link_shards.CREDIT)."""

# the evidence groups and kinds (scoring.py)
CONSTS = r"""
local GROUPS = {'net', 'tls_ua', 'template'}
local GROUP = {ip = 'net', prefix = 'net', asn = 'net', tls_ua = 'tls_ua', template = 'template'}
local INDEX = {ip = 1, prefix = 2, asn = 3, tls_ua = 4, template = 5}
local NETWORK = {ip = true, prefix = true, asn = true}
"""

# the pair-score arithmetic (scoring.Pair, line for line); needs the locals now, horizon,
# multi_s and CONSTS.
PAIR_FUNCS = r"""
local function fmt(x) return string.format('%.17g', x) end
local function split(s, sep)
  local out, i = {}, 1
  while true do
    local j = string.find(s, sep, i, true)
    if not j then out[#out + 1] = string.sub(s, i); return out end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end
local function parse(v)
  local pr = {flag = false, parts = {}}
  if not v then return pr end
  local items = split(v, ';')
  pr.flag = items[1] == '1'
  for i = 2, #items do
    local f = split(items[i], ',')
    pr.parts[f[1]] = {tonumber(f[2]), tonumber(f[3]), tonumber(f[4]), f[5],
                      f[6] ~= '' and f[6] or false,
                      {tonumber(f[7]), tonumber(f[8]), tonumber(f[9]), tonumber(f[10]),
                       tonumber(f[11])}}
  end
  return pr
end
local function dump(pr)
  local out = {pr.flag and '1' or '0'}
  for _, g in ipairs(GROUPS) do
    local p = pr.parts[g]
    if p and p[3] >= horizon then
      out[#out + 1] = g .. ',' .. fmt(p[1]) .. ',' .. fmt(p[2]) .. ',' .. fmt(p[3]) .. ',' ..
        p[4] .. ',' .. (p[5] or '') .. ',' .. table.concat(p[6], ',')
    end
  end
  return table.concat(out, ';')
end
local function credit(pr, kind, value, w, burst)
  local g = GROUP[kind]
  local p = pr.parts[g]
  if p == nil or p[3] < horizon then
    local counts = {0, 0, 0, 0, 0}
    counts[INDEX[kind]] = 1
    pr.parts[g] = {w, 0.0, now, value, false, counts}
  else
    if value ~= p[4] and value ~= p[5] then
      if burst and now - p[3] <= multi_s then
        local b = p[1]
        if w < b then b = w end
        if b > p[2] then p[2] = b end
      end
      p[6][INDEX[kind]] = p[6][INDEX[kind]] + 1
      p[5] = p[4]
      p[4] = value
    end
    if w > p[1] then p[1] = w end
    p[3] = now
  end
  local total = 0.0
  for _, k in ipairs(GROUPS) do
    local q = pr.parts[k]
    if q and q[3] >= horizon then total = total + (q[1] + q[2]) end
  end
  return total
end
local function counts_of(pr)
  local out = {0, 0, 0, 0, 0}
  for _, g in ipairs(GROUPS) do
    local q = pr.parts[g]
    if q and q[3] >= horizon then
      for i = 1, 5 do out[i] = out[i] + q[6][i] end
    end
  end
  return table.concat(out, ',')
end
local function pair_key(a, b)
  if a < b then return a .. '\t' .. b end
  return b .. '\t' .. a
end

"""
