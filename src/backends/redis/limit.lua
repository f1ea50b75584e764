-- The shared AWS budget: GCRA timed by Redis's own clock, with the lowered
-- rate of a backoff (jobs/limit/aimd.rs, the same arithmetic) pacing calls
-- in front of the configured bucket. One hash holds everything:
--   tat    the configured bucket's theoretical arrival time (ms)
--   ptat   the lowered rate's pacing (ms), while backing off
--   btat   background work's guaranteed share (ms)
--   w, low, since   the backoff (working rate, lowered rate, since ms)
--   gen    the generation: rises with every decrease, and starts from Redis's
--          clock (ms) when the hash is new, so it never goes back even if
--          the hash expires or Redis restarts empty; ok: a call of this
--          generation got through
--
-- KEYS[1] the hash
-- ARGV[1] operation: acquire | background | throttled | answered
-- ARGV[2] configured rate (calls/s)   ARGV[3] burst
-- ARGV[4] acquire: the longest wait (ms) the caller accepts
--         throttled / answered: the generation the call was sent at
-- ARGV[5] acquire: how many calls may wait   ARGV[6] background share (0..1)
-- ARGV[7] "now" in ms, only to compare the script with the in-process
--         bucket on given arrivals; empty: Redis's clock
-- ARGV[8] the hash's TTL (ms)
-- ARGV[9] the channel a decrease is announced on (with the new generation):
--         turns reserved before it are void, their callers ask again
--
-- Replies: acquire/background {status, wait in µs, generation, rate}
--   status 0 granted (start after the wait), 1 not before the deadline,
--   2 too many waiting, 3 background: no spare token, retry after the wait;
-- throttled {1, from, to} when it lowered the rate, else {0};
-- answered {1}.

local DECREASE, MIN_RATE_FRACTION, RETURN, PROBE = 0.7, 0.05, 0.04, 0.02

local key, op = KEYS[1], ARGV[1]
local R, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local now
if ARGV[7] ~= '' then
  now = tonumber(ARGV[7])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local ttl = tonumber(ARGV[8])

local h = redis.call('HMGET', key, 'tat', 'ptat', 'btat', 'w', 'low', 'since', 'gen', 'ok')
local tat, ptat, btat = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
local w, low, since = tonumber(h[4]), tonumber(h[5]), tonumber(h[6])
local gen, ok = tonumber(h[7]) or math.floor(now), tonumber(h[8]) or 0

-- The allowed rate now (aimd.rs: Backoff::rate); clears an ended backoff.
local function rate_now()
  if not w then return R end
  local c = RETURN * R
  local k = 0
  if w > low then k = ((w - low) / c) ^ (1 / 3) end
  local e = math.max(0, (now - since) / 1000)
  local r
  if e < k then r = w - c * (k - e) ^ 3 else r = w * (1 + PROBE * (e - k)) end
  if r >= R then
    w, low, since, ptat = nil, nil, nil, nil
    redis.call('HDEL', key, 'w', 'low', 'since', 'ptat')
    return R
  end
  return r
end

local function save()
  local fields = {'tat', tostring(tat), 'gen', gen, 'ok', ok}
  if ptat then table.insert(fields, 'ptat'); table.insert(fields, tostring(ptat)) end
  if btat then table.insert(fields, 'btat'); table.insert(fields, tostring(btat)) end
  if w then
    for _, v in ipairs({'w', tostring(w), 'low', tostring(low), 'since', tostring(since)}) do
      table.insert(fields, v)
    end
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, ttl)
end

if op == 'throttled' then
  if tonumber(ARGV[4]) ~= gen then return {0} end
  local from = rate_now()
  local to = math.max(from * DECREASE, R * MIN_RATE_FRACTION)
  if to >= from then return {0} end
  local working
  if not w then working = from elseif ok == 0 then working = w else working = (from + to) / 2 end
  w, low, since = working, to, now
  ptat = now + 1000 / to
  gen, ok = math.max(gen + 1, math.floor(now)), 0
  -- Turns reserved at the old rate are void: the bucket starts from now.
  if not tat or tat > now then tat = now end
  save()
  redis.call('PUBLISH', ARGV[9], gen)
  return {1, tostring(from), tostring(to)}
end

if op == 'answered' then
  if tonumber(ARGV[4]) == gen and ok == 0 then
    redis.call('HSET', key, 'ok', 1)
    redis.call('PEXPIRE', key, ttl)
  end
  return {1}
end

local rate = rate_now()
local T = 1000 / R
local tau = (burst - 1) * T
tat = tat or now
local earliest = math.max(tat - tau, now)
local P
if w then
  P = 1000 / rate
  earliest = math.max(earliest, ptat or now)
end
local wait = earliest - now

local function grant()
  tat = math.max(tat, earliest) + T
  if w then ptat = earliest + P end
  save()
  return {0, math.floor(wait * 1000), gen, tostring(rate)}
end

if op == 'acquire' then
  if wait > tonumber(ARGV[4]) then
    return {1, math.floor(wait * 1000), gen, tostring(rate)}
  end
  local spacing = math.max(T, P or T)
  local ahead = math.ceil(wait / spacing)
  if ahead >= tonumber(ARGV[5]) then
    return {2, math.floor(ahead * spacing * 1000), gen, tostring(rate)}
  end
  return grant()
end

-- Background work: a spare token now, or its guaranteed share.
if wait <= 0 then return grant() end
local share = tonumber(ARGV[6]) * R
if share > 0 then
  local BT = 1000 / share
  btat = btat or now
  if btat <= now then
    btat = math.max(btat, now) + BT
    return grant()
  end
  return {3, math.floor(math.min(wait, btat - now) * 1000), gen, tostring(rate)}
end
return {3, math.floor(wait * 1000), gen, tostring(rate)}
