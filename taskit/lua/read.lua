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
refuse_unless(KEYS[1], 'hash')
local now, out, k = tonumber(ARGV[1]), {}, 3
for a = 2, #ARGV do
  local id, bucket, job = ARGV[a], KEYS[k], KEYS[k + 1]
  k = k + 2
  refuse_unless(job, 'hash')
  local found = false
  if redis.call('EXISTS', job) == 1 then
    found = redis.call('HGETALL', job)
  else
    refuse_unless(bucket, 'hash')
    local fields = merged(read_parts(bucket, KEYS[1], id))
    if fields and fields.tl and (fields.s == 'queued' or fields.s == 'scheduled') then
      local until_ = redis.pcall('ZSCORE', KEYS[2], id)
      if type(until_) == 'string' and tonumber(until_) <= now then fields = nil end
    end
    if fields then found = flat(fields) end
  end
  out[#out + 1] = found
end
return out
