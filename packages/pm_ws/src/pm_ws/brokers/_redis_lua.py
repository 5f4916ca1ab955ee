"""The Lua scripts that make RedisBroker's publish and history reads atomic."""

from __future__ import annotations

from typing import Final

# Shared by both scripts. KEYS[1] meta hash {epoch, seq}, KEYS[2] history
# stream (entry ids are "<seq>-0"), KEYS[3] hash event id -> seq.
# `current(candidate)` returns the stream's epoch and seq. A missing or
# inconsistent meta hash (one the history has overtaken) restarts the
# numbering under the candidate epoch and drops what the old numbering left.
# A lost history with the meta intact keeps the numbering: readers see the
# hole as incomplete history, and quiet tenants (whose history expires by
# TTL) keep their epoch.
_CURRENT: Final = """
local function current(candidate)
  local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
  local epoch, seq = meta[1], tonumber(meta[2])
  if epoch and seq then
    local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
    if #top == 0 or tonumber(string.match(top[1][1], '^(%d+)')) <= seq then
      return epoch, seq
    end
  end
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'epoch', candidate, 'seq', 0)
  return candidate, 0
end
"""

# ARGV: 1 candidate epoch, 2 event id, 3 pm.v1.Event bytes without position,
# 4 tenant id, 5 published_at_ns, 6 history TTL in ms, 7 history size,
# 8 channel, 9 channel message header.
# Returns {epoch, seq, duplicate (0/1)}.
PUBLISH: Final = (
    _CURRENT
    + """
local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end

local function varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end

-- pm.v1.Event field 4 (position), a StreamPosition {1: epoch, 2: seq}.
local function position(epoch, seq)
  local body = '\\10' .. varint(#epoch) .. epoch .. '\\16' .. varint(seq)
  return '\\34' .. varint(#body) .. body
end

local epoch, seq = current(ARGV[1])
local now_ns = tonumber(ARGV[5])
local ttl_ms = tonumber(ARGV[6])
local size = tonumber(ARGV[7])

local prior = redis.call('HGET', KEYS[3], ARGV[2])
if prior then
  local entry = redis.call('XRANGE', KEYS[2], prior, prior)
  if #entry == 1 then
    local stored_ns = tonumber(field(entry[1][2], 'published_at_ns'))
    if stored_ns and stored_ns + ttl_ms * 1000000 > now_ns then
      return {epoch, tonumber(prior), 1}
    end
  end
end

seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local event = ARGV[3] .. position(epoch, seq)

-- Trim exactly, forgetting the event ids of the entries that leave.
local excess = redis.call('XLEN', KEYS[2]) - size + 1
if excess > 0 then
  for _, old in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', excess)) do
    local old_id = field(old[2], 'event_id')
    if old_id and redis.call('HGET', KEYS[3], old_id) == string.match(old[1], '^(%d+)') then
      redis.call('HDEL', KEYS[3], old_id)
    end
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', size, string.format('%d-0', seq),
  'event', event, 'event_id', ARGV[2], 'tenant_id', ARGV[4], 'published_at_ns', ARGV[5])
redis.call('HSET', KEYS[3], ARGV[2], string.format('%d', seq))
redis.call('PEXPIRE', KEYS[2], ttl_ms)
redis.call('PEXPIRE', KEYS[3], ttl_ms)
redis.call('PUBLISH', ARGV[8], ARGV[9] .. event)
return {epoch, seq, 0}
"""
)

# ARGV: 1 candidate epoch, 2 asked epoch, 3 asked seq.
# Returns {epoch, seq, entries after the asked seq when the epochs match}.
READ: Final = (
    _CURRENT
    + """
local epoch, seq = current(ARGV[1])
local after = tonumber(ARGV[3])
local entries = {}
if ARGV[2] == epoch and after and after >= 0 and after < seq then
  entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', after + 1), '+')
end
return {epoch, seq, entries}
"""
)
