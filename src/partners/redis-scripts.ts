/**
 * The Lua scripts behind RedisPartnerLimits. Each runs atomically on the Redis server, reads the
 * server's clock (TIME), touches only the keys of one account (one hash tag, so one Cluster slot),
 * and leaves every key it wrote with a TTL that ends when the key stops mattering.
 *
 * Keys of one account (`<prefix>:{<account>}:…`):
 *   log    ZSET  member `<permitId>:<records>`, score = the request's end (ms, server clock): its
 *                lease expiry while in flight, its completion once released. Counted while
 *                score >= now - intervalMs, as WindowLimiter counts.
 *   sum    STRING  the records of the `log` entries, kept for a records limit only (so a check
 *                costs O(log n), not O(n)); counted again from the log if it goes missing.
 *   run    ZSET  member `<permitId>`, score = lease expiry: the requests in flight, cluster-wide.
 *   pause  HASH  field = pause reason, value = until (ms, server clock); expires with the latest.
 *
 * One key for every account (`<prefix>:paused`, in a Cluster slot of its own, so it is written by a
 * call of its own beside the account's `pause`):
 *   paused ZSET  member = the account as JSON text, score = until of its operator pause (ms,
 *                server clock) plus a slack: the index that lists operator pauses. Never what
 *                holds a partner (`pause` is), so the listing checks each entry against the
 *                account's `pause` before showing it; entries past their time are trimmed on
 *                every write and read.
 */

/** Shared head of every script: the server's now in ms, and the helpers. */
const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function weightOf(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end

local function weightsOf(members)
  local total = 0
  for i = 1, #members do total = total + weightOf(members[i]) end
  return total
end

-- A key lives until its latest entry stops mattering: that entry's score plus afterMs. PEXPIRE,
-- relative, not PEXPIREAT: Redis drops a key at once whose absolute expiry its own (later) clock has
-- reached, which would lose an entry still counted in the millisecond the script started.
local function expireAfterLast(key, afterMs, companion)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local ms = 0
  if #last > 0 then ms = tonumber(last[2]) + afterMs - now end
  if ms <= 0 then
    -- Empty, or only entries that no longer count (leases of replicas that died).
    redis.call('DEL', key)
    if companion then redis.call('DEL', companion) end
    return
  end
  redis.call('PEXPIRE', key, ms)
  if companion then redis.call('PEXPIRE', companion, ms) end
end

-- A member put back into the log adds its records to sum, if sum is kept (a records limit);
-- a sum that is missing is counted again from the log by the next acquisition that needs it.
local function addWeight(sum, weight)
  if redis.call('EXISTS', sum) == 1 then redis.call('INCRBY', sum, weight) end
end

-- The latest pause in force: ms left (0 = none) and its reason.
local function pauseLeft(key)
  local fields = redis.call('HGETALL', key)
  local untilMs, reason = 0, ''
  for i = 1, #fields, 2 do
    local u = tonumber(fields[i + 1])
    if u > untilMs then untilMs, reason = u, fields[i] end
  end
  if untilMs > now then return untilMs - now, reason end
  return 0, ''
end

-- Re-arms the pause key to expire with its latest pause; drops the ones that are over.
local function expirePause(key)
  local fields = redis.call('HGETALL', key)
  local latest = 0
  for i = 1, #fields, 2 do
    local u = tonumber(fields[i + 1])
    if u <= now then redis.call('HDEL', key, fields[i]) elseif u > latest then latest = u end
  end
  if latest > 0 then redis.call('PEXPIRE', key, latest - now) end
end
`;

/**
 * KEYS log, sum, run, pause. ARGV permitId, records, requestsLimit, recordsLimit, intervalMs,
 * maxConcurrent, leaseMs, busyPollMs. Returns {1, leaseMs} granted, or {0, waitMs, why}: how long
 * until the pause ends, a lease expires (at most busyPollMs), or the oldest entry leaves the window.
 */
export const ACQUIRE = `${PRELUDE}
local log, sum, run, pause = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, weight = ARGV[1], tonumber(ARGV[2])
local requests, records, intervalMs = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local maxConcurrent, leaseMs, busyPollMs = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])

local pausedMs, reason = pauseLeft(pause)
if pausedMs > 0 then return {0, pausedMs, 'pause:' .. reason} end

if maxConcurrent > 0 then
  -- Leases that ran out belong to replicas that died (or lost Redis) holding them.
  redis.call('ZREMRANGEBYSCORE', run, '-inf', '(' .. now)
  if redis.call('ZCARD', run) >= maxConcurrent then
    local first = redis.call('ZRANGE', run, 0, 0, 'WITHSCORES')
    return {0, math.min(tonumber(first[2]) - now + 1, busyPollMs), 'concurrency'}
  end
end

local windowed = requests > 0 or records > 0
local used = 0
if windowed then
  local cutoff = '(' .. (now - intervalMs)
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
    addWeight(sum, -weightsOf(gone))
  end
  local count = redis.call('ZCARD', log)
  if records == 0 or count == 0 then
    -- Kept only for a records limit: without one, a stale sum would overcount once one is set.
    redis.call('DEL', sum)
  else
    used = tonumber(redis.call('GET', sum) or '-1')
    if used < 0 then
      used = weightsOf(redis.call('ZRANGE', log, 0, -1))
      redis.call('SET', sum, used)
    end
  end
  -- Whatever is counted, a request fits if there is room for it, or if nothing is counted at all
  -- (a batch above the records limit goes alone, or it never could).
  local full = (requests > 0 and count > 0 and count + 1 > requests)
    or (records > 0 and used > 0 and used + weight > records)
  if full then
    -- The oldest entry leaves first; one still in flight leaves a window after it completes.
    local first = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
    local endMs = math.min(tonumber(first[2]), now)
    expireAfterLast(log, intervalMs + 1, sum)
    return {0, endMs + intervalMs + 1 - now, 'window'}
  end
end

local leaseEnd = now + leaseMs
if maxConcurrent > 0 then
  redis.call('ZADD', run, leaseEnd, id)
  expireAfterLast(run, 1)
end
if windowed then
  redis.call('ZADD', log, leaseEnd, id .. ':' .. weight)
  if records > 0 then redis.call('SET', sum, used + weight) end
  expireAfterLast(log, intervalMs + 1, sum)
end
return {1, leaseMs}
`;

/**
 * KEYS log, sum, run. ARGV permitId, records, intervalMs, leaseMs, inRun (0|1), inLog (0|1).
 * Pushes the permit's lease to now + leaseMs; an entry that is missing (its lease ran out, or Redis
 * lost it in a restart) is put back, because the request is still in flight. Returns 1 if it was.
 */
export const RENEW = `${PRELUDE}
local log, sum, run = KEYS[1], KEYS[2], KEYS[3]
local id, weight, intervalMs, leaseMs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local leaseEnd = now + leaseMs
local missing = 0
if ARGV[5] == '1' then
  if redis.call('ZADD', run, leaseEnd, id) == 1 then missing = 1 end
  expireAfterLast(run, 1)
end
if ARGV[6] == '1' then
  if redis.call('ZADD', log, leaseEnd, id .. ':' .. weight) == 1 then
    missing = 1
    addWeight(sum, weight)
  end
  expireAfterLast(log, intervalMs + 1, sum)
end
return missing
`;

/**
 * KEYS log, sum, run. ARGV permitId, records, intervalMs, inRun (0|1), inLog (0|1).
 * Frees the concurrency slot; the window entry now ends at the completion (now) and stays counted
 * for intervalMs after it. An entry already gone is put back: the request ran until now.
 */
export const RELEASE = `${PRELUDE}
local log, sum, run = KEYS[1], KEYS[2], KEYS[3]
local id, weight, intervalMs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] == '1' then
  redis.call('ZREM', run, id)
  expireAfterLast(run, 1)
end
if ARGV[5] == '1' then
  if redis.call('ZADD', log, now, id .. ':' .. weight) == 1 then addWeight(sum, weight) end
  expireAfterLast(log, intervalMs + 1, sum)
end
return 1
`;

/** KEYS pause. ARGV reason, durationMs. Keeps the later of the pause held and this one. */
export const PAUSE = `${PRELUDE}
local key, reason, untilMs = KEYS[1], ARGV[1], now + tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', key, reason) or '0')
if untilMs > current then redis.call('HSET', key, reason, untilMs) end
expirePause(key)
return 1
`;

/** KEYS pause. Lifts the operator pause only. Returns 1 if there was one in force. */
export const RESUME = `${PRELUDE}
local key = KEYS[1]
local untilMs = tonumber(redis.call('HGET', key, 'operator') or '0')
redis.call('HDEL', key, 'operator')
expirePause(key)
if untilMs > now then return 1 end
return 0
`;

/** KEYS pause. Returns {msLeft, reason} of the latest pause in force, or {0, ''}. */
export const PAUSE_OF = `${PRELUDE}
local ms, reason = pauseLeft(KEYS[1])
return {ms, reason}
`;

/**
 * KEYS paused. ARGV account, durationMs, slackMs. Indexes an operator pause (keeping the later of
 * two), trims what is over, and lets the key expire with its last entry.
 */
export const PAUSED_ADD = `${PRELUDE}
local key, account = KEYS[1], ARGV[1]
local untilMs = now + tonumber(ARGV[2]) + tonumber(ARGV[3])
local current = tonumber(redis.call('ZSCORE', key, account) or '0')
if untilMs > current then redis.call('ZADD', key, untilMs, account) end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
expireAfterLast(key, 1)
return 1
`;

/** KEYS paused. ARGV account. Drops the account's entry; the key then expires with the last one left. */
export const PAUSED_REMOVE = `${PRELUDE}
local key = KEYS[1]
local removed = redis.call('ZREM', key, ARGV[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
expireAfterLast(key, 1)
return removed
`;

/**
 * KEYS paused. ARGV max. Trims what is over, then returns {now, account, until, account, until, …}
 * (as strings, soonest end first, at most max accounts).
 */
export const PAUSED_LIST = `${PRELUDE}
local key, max = KEYS[1], tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
expireAfterLast(key, 1)
local out = {tostring(now)}
local entries = redis.call('ZRANGE', key, 0, max - 1, 'WITHSCORES')
for i = 1, #entries do out[#out + 1] = entries[i] end
return out
`;

/**
 * KEYS zset, string, hash: keys of the probe's own (`<prefix>:{%probe}:…`, a tag no account has).
 * Runs every command the scripts above run, so an ACL that refuses one of them (NOPERM) is found
 * by the health probe too, and the probe does not call the store usable while a partner's call
 * would still be refused. Reads and expiries first, on absent keys: a refusal then stops the script
 * before it wrote anything, and each write carries a TTL at once; nothing is left behind.
 */
export const PROBE = `
if redis.replicate_commands then redis.replicate_commands() end
local z, s, h = KEYS[1], KEYS[2], KEYS[3]
redis.call('TIME')
redis.call('EXISTS', s)
redis.call('GET', s)
redis.call('HGET', h, 'f')
redis.call('HGETALL', h)
redis.call('ZCARD', z)
redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
redis.call('ZRANGEBYSCORE', z, 0, 0)
redis.call('ZSCORE', z, 'p')
redis.call('PEXPIRE', z, 1000)
redis.call('DEL', z)
redis.call('ZADD', z, 0, 'p')
redis.call('PEXPIRE', z, 1000)
redis.call('ZREM', z, 'p')
redis.call('ZREMRANGEBYSCORE', z, '-inf', 0)
redis.call('SET', s, 0)
redis.call('PEXPIRE', s, 1000)
redis.call('INCRBY', s, 1)
redis.call('HSET', h, 'f', 1)
redis.call('PEXPIRE', h, 1000)
redis.call('HDEL', h, 'f')
redis.call('DEL', z, s, h)
return 1
`;
