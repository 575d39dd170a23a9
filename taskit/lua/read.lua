-- Read jobs of one tag, wherever their fields are (lib/records.lua), in one atomic step:
-- a job that ends meanwhile moves from its bucket and state entry to its own hash, and a
-- read in several commands could miss it in both. Reads only.
-- KEYS (one tag): 1 state hash, 2 expiry zset, then per job: bucket, own hash
-- ARGV: 1 now, then the ids, one per job of KEYS
-- A key of the wrong type is refused with WRONGTYPE, naming it.
-- Returns per job its field, value pairs (with its status), or false if it does not exist
-- (a queued job whose ttl ran out no longer does).
--#include guard
--#include records

-- A read's reply, or the script stops with WRONGTYPE naming the key.
local function read(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    local _, found = fits(key, 'hash')
    error(redis.error_reply('WRONGTYPE taskit: ' .. wrong_type(key, 'hash', found or '?') .. '; delete the key or repair it'))
  end
  return reply
end

local now, out, k = tonumber(ARGV[1]), {}, 3
for a = 2, #ARGV do
  local id, bucket, job = ARGV[a], KEYS[k], KEYS[k + 1]
  k = k + 2
  local found = read('HGETALL', job)
  if #found > 0 then
    for i = 1, #found, 2 do
      if found[i] == 'p' then found = flat(ended_fields(job)); break end
    end
  else
    local fields = merged(unpacked(read('HGET', bucket, id)), unpacked(read('HGET', KEYS[1], id)))
    found = false
    if fields and fields.tl and (fields.s == 'queued' or fields.s == 'scheduled') then
      local until_ = redis.pcall('ZSCORE', KEYS[2], id)
      if type(until_) == 'string' and tonumber(until_) <= now then fields = nil end
    end
    if fields then found = flat(fields) end
  end
  out[#out + 1] = found
end
return out
