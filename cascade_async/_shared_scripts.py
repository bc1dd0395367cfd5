"""The shared limiter's Lua scripts: run atomically in Redis, timed by the server's clock (``TIME``).

The bucket is the local limiter's (``_local_limit.Bucket``): a level that may go into debt, refilled at the
rate in force (the adaptive factor included), stored in one hash per account. One key per script keeps it
usable on Redis Cluster. The scripts book slots (GCRA's virtual scheduling, written as a level):

- Every acquisition takes its token at once and is given its **slot**: the moment when the level, every
  earlier booking counted, leaves ``interactive_reserve`` tokens behind. The caller sleeps exactly until
  then and sends, without asking again. Waiters thus queue in Redis, in booking order, one script call
  per request whatever the number of processes.
- **Bulk** books only within the horizon ``(burst - reserve) / rate``; a slot further away (after a long
  pause) takes nothing and returns how long to wait before asking once more.
- **Interactive** acquisitions may go ahead of the booked slots, up to ``reserve`` of them at a time: while
  fewer than ``reserve`` interactive requests are ahead of their own slot (their slots are kept in
  ``cuts``), an interactive acquisition waits for nothing but a pause and the message bucket. Why the
  server never sees more than its limit: the booked stream leaves ``reserve`` tokens at every slot, and
  at any moment at most ``reserve`` requests have been moved ahead of it.
- ``fresh`` (0 or 1) is the share of the burst a missing bucket starts with: 1 for a new account, 0 when the
  caller acquired within the key's lifetime, so the key can only be missing because Redis restarted (the
  server's own bucket is not full then).
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "HEARTBEAT", "PENALIZE", "RELEASE"]

# Shared by the bucket scripts: the clock, the stored settings, the adaptive factor and the levels.
# ARGV: rate, burst, mrate, mburst, recovery, ttl_ms, fresh.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local s = redis.call('HMGET', KEYS[1], 'rate', 'burst', 'mrate', 'mburst', 'level', 'at', 'mlevel', 'pause',
                     'low', 'rfrom', 'cuts')
local mismatch = 0
local function stricter(stored, mine)
  stored = tonumber(stored)
  if stored == nil then return mine end
  if stored ~= mine then mismatch = 1 end
  if stored == 0 then return mine end  -- 0: no message bucket
  if mine == 0 then return stored end
  return math.min(stored, mine)
end
local rate = stricter(s[1], tonumber(ARGV[1]))
local burst = stricter(s[2], tonumber(ARGV[2]))
local mrate = stricter(s[3], tonumber(ARGV[3]))
local mburst = stricter(s[4], tonumber(ARGV[4]))
local fresh = tonumber(ARGV[7])
local pause = tonumber(s[8]) or 0
local low = tonumber(s[9]) or 1
local rfrom = tonumber(s[10]) or 0
local factor = low
if now > rfrom then factor = math.min(1, low + tonumber(ARGV[5]) * (now - rfrom) / 1e6) end
local function level_at(stored, cap, per_us)
  local lvl, at = tonumber(stored), tonumber(s[6])
  if lvl == nil or at == nil then return cap * fresh end
  if now <= at then return lvl end
  return math.min(cap, lvl + (now - at) * per_us)
end
local per_us = rate * factor / 1e6
local mper_us = mrate * factor / 1e6
local level = level_at(s[5], burst, per_us)
local mlevel = 0
if mrate > 0 then mlevel = level_at(s[7], mburst, mper_us) end
local function f(x) return string.format('%.17g', x) end
redis.call('HSET', KEYS[1], 'rate', f(rate), 'burst', f(burst), 'mrate', f(mrate), 'mburst', f(mburst))
local function expire()
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]) + math.max(0, math.floor((pause - now) / 1000)))
end
"""

# ARGV: the prelude's, then messages, interactive (1/0), reserve.
# Returns: granted (1/0), wait in µs (until the slot if granted, else before asking again), mismatch (1/0),
# and the settings in force as strings.
ACQUIRE = (
    _PRELUDE
    + """
local messages, interactive = tonumber(ARGV[8]), ARGV[9] == '1'
local reserve = math.max(0, math.min(tonumber(ARGV[10]), burst - 1))  -- a stricter burst stored by another process
local mwait = 0
if mrate > 0 and messages > mlevel then mwait = (messages - mlevel) / mper_us end
local slot = math.max(0, (1 + reserve - level) / per_us, pause - now, mwait)
local wait = slot
local answer = {1, 0, mismatch, f(rate), f(burst), f(mrate), f(mburst)}
if not interactive then
  local horizon = math.max(2e6, (burst - reserve) / per_us)
  if slot > horizon then
    expire()
    answer[1], answer[2] = 0, math.ceil(slot - horizon)
    return answer
  end
elseif reserve > 0 and slot > 0 then
  local cuts = {}
  for x in string.gmatch(s[11] or '', '%S+') do
    x = tonumber(x)
    if x > now then cuts[#cuts + 1] = x end
  end
  table.sort(cuts)
  local ahead = 0
  if #cuts >= reserve then ahead = cuts[#cuts - reserve + 1] - now end
  ahead = math.max(ahead, pause - now, mwait)
  if ahead < slot then
    wait = ahead
    cuts[#cuts + 1] = now + slot
  end
  for i, x in ipairs(cuts) do cuts[i] = f(x) end
  redis.call('HSET', KEYS[1], 'cuts', table.concat(cuts, ' '))
end
redis.call('HSET', KEYS[1], 'level', f(level - 1), 'at', f(now))
if mrate > 0 then redis.call('HSET', KEYS[1], 'mlevel', f(mlevel - messages)) end
expire()
answer[2] = math.ceil(wait)
return answer
"""
)

# ARGV: the prelude's, then messages. Gives back the token (and messages) of a booked slot its caller will
# not use. A missing bucket (Redis restarted since the booking) is left missing. Returns 1 if given back.
RELEASE = (
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    + _PRELUDE
    + """
redis.call('HSET', KEYS[1], 'level', f(math.min(burst, level + 1)), 'at', f(now))
if mrate > 0 then redis.call('HSET', KEYS[1], 'mlevel', f(math.min(mburst, mlevel + tonumber(ARGV[8])))) end
expire()
return 1
"""
)

# ARGV: the prelude's, then pause_us, lower, floor. Returns the pause left, in µs.
PENALIZE = (
    _PRELUDE
    + """
local pause_us, lower, floor = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local pause_end = now + pause_us
if now >= pause then  -- 429s answered during a pause were sent before it: lower once, not each
  factor = math.max(floor, factor * lower)
  redis.call('HSET', KEYS[1], 'low', f(factor), 'rfrom', f(pause_end))
end
pause = math.max(pause, pause_end)
level = math.min(level, 1 - (pause_end - now) * rate * factor / 1e6)
redis.call('HSET', KEYS[1], 'level', f(level), 'at', f(now), 'pause', f(pause))
if mrate > 0 then redis.call('HSET', KEYS[1], 'mlevel', f(mlevel)) end
expire()
return math.floor(pause - now)
"""
)

# KEYS[1]: the heartbeat set. ARGV: member, stale_ms, ttl_ms. Returns K.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""
