-- Shared by every script (pasted in where a script says --#include guard): check before
-- writing. Redis does not roll a script back when it raises, so a script that raised
-- halfway would leave its first writes done and the rest undone. So a script checks the
-- keys it will write and the values it reads before it writes, and never raises on data:
-- * a data key (queue list, registry, job hash, packed bucket) of the wrong type is refused
--   before anything is written (`refuse_unless`), or costs only its own job or queue;
-- * a signal key (wake or done list: taskit's own, carrying no data) of the wrong type is
--   repaired: deleted, so that the write that follows recreates it (`repair`);
-- * a number read from Redis goes through `number` or `seconds`;
-- * a list read from Redis is never unpack()ed whole (Lua stops near 8,000 values):
--   `call_chunked`.

-- The type of a key: 'none' when it does not exist.
local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

-- Whether `key` is absent or a `kind` ('hash', 'list', 'zset', ...); if not, also its type.
-- A list or zset is asked its length, whose WRONGTYPE error is the check: TYPE's reply, a
-- status, costs Redis a table to hand to Lua (about 2k instructions more), so it is asked
-- only to name the type found, and of the other kinds (HLEN is not granted to every ACL
-- user: docs/scaling.md).
local function fits(key, kind)
  local length_command
  if kind == 'list' then length_command = 'LLEN' elseif kind == 'zset' then length_command = 'ZCARD' end
  if length_command and type(redis.pcall(length_command, key)) == 'number' then
    return true
  end
  local found = key_type(key)
  if found == 'none' or found == kind then
    return true
  end
  return false, found
end

-- What is wrong with a key, for messages: 'taskit:queue:q is a string, not a list'.
local function wrong_type(key, kind, found)
  return key .. ' is a ' .. found .. ', not a ' .. kind
end

-- Delete a signal key of the wrong type (the write that follows recreates it).
local function repair(key, kind)
  if not fits(key, kind) then
    redis.call('DEL', key)
  end
end

-- Raise WRONGTYPE, naming the key, when a data key is of the wrong type. Call it before the
-- script's first write, so that nothing is half-written.
local function refuse_unless(key, kind)
  local ok, found = fits(key, kind)
  if not ok then
    error(redis.error_reply('WRONGTYPE taskit: ' .. wrong_type(key, kind, found) .. '; delete the key or repair it'))
  end
end

-- refuse_unless for each KEYS[i] of `kinds` (i -> kind), in the order of i.
local function refuse_unless_keys(kinds)
  local indexes = {}
  for i in pairs(kinds) do indexes[#indexes + 1] = i end
  table.sort(indexes)
  for _, i in ipairs(indexes) do refuse_unless(KEYS[i], kinds[i]) end
end

-- `value` as a number, or `default` when it is none within [low, high] (nil, text, NaN, inf).
local function number(value, default, low, high)
  local n = tonumber(value)
  if n == nil or n ~= n or n < low or n > high then
    return default
  end
  return n
end

-- A time in Unix seconds, or `default` when unreadable (NaN, infinite, before 1970 or after 5000).
local function unix_time(value, default)
  return number(value, default, 0, 95617584000)
end

-- A ttl or keep in whole seconds: -1 (forever), 0 .. 100 years, or `default` when unreadable.
-- A longer one, which Redis would refuse to EXPIRE (and abort the script), is forever.
local MAX_SECONDS = 3155760000  -- taskit.schedule.MAX_SECONDS (tests/test_corrupt_keys.py checks they agree)
local function seconds(value, default)
  local n = tonumber(value)
  if n == nil or n ~= n or (n < 0 and n ~= -1) then
    return default
  end
  if n == -1 or n > MAX_SECONDS then
    return -1
  end
  return math.floor(n)
end

-- `command key item ...` over a list of any length, at most 1000 items a call (an even
-- number, so ZADD's score, member pairs stay together).
local function call_chunked(command, key, items)
  for first = 1, #items, 1000 do
    redis.call(command, key, unpack(items, first, math.min(first + 999, #items)))
  end
end

-- `write key ...` on a signal or index key (a wake list, an in-flight list, a worker or
-- queue set), which is repaired (as `repair`) if the write finds it of another type: the
-- write is the type check, so none is paid when it fits. Any other refusal is raised, as
-- redis.call would. Returns the write's reply.
local function call_repairing(write, key, ...)
  local reply = redis.pcall(write, key, ...)
  if type(reply) == 'table' and reply.err then
    if not string.find(reply.err, 'WRONGTYPE', 1, true) then error(reply) end
    redis.call('DEL', key)
    reply = redis.call(write, key, ...)
  end
  return reply
end

-- `call_chunked` on a signal or index key: its first write is `call_repairing`'s.
local function write_repairing(command, key, items)
  for first = 1, #items, 1000 do
    local last = math.min(first + 999, #items)
    if first == 1 then
      call_repairing(command, key, unpack(items, first, last))
    else
      redis.call(command, key, unpack(items, first, last))
    end
  end
end

-- Whether Lua orders strings (strcoll: Redis takes the collation from its locale) as a small
-- zset (a listpack) orders the members of one score: byte by byte. It does in the C and
-- POSIX locales; where it does not, `in_byte_order` leaves a list as it is (still correct).
local BYTE_ORDER = '9' < 'A' and 'Z' < 'a'

-- Sort `ids` in place by their bytes (when Lua's order is that: BYTE_ORDER) and return it.
-- Members of one score come out of a small zset fastest in this order (ZREM finds each at
-- the head) and go in fastest in the reverse (ZADD walks from the head, so each then stops
-- at the first entry): one comparison for each, rather than one for each entry before it.
local function in_byte_order(ids)
  if BYTE_ORDER and #ids > 1 then table.sort(ids) end
  return ids
end
