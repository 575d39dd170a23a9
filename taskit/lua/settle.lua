-- Move jobs that a script ended without naming their own keys (the claim, the maintenance
-- step: lib/failing.lua fail_later) into their own hash, and signal their end.
-- KEYS (one tag): 1 settle zset, 2 state hash, 3 expiry zset, then per job: bucket, own
--       hash, done list
-- ARGV: the ids, one per job of KEYS
-- Returns how many were settled (one already settled, or no longer ended, is skipped).
--#include guard
--#include records
--#include signal_end
if not fits(KEYS[1], 'zset') or not fits(KEYS[2], 'hash') then
  return 0
end
local settled, k = 0, 4
for _, id in ipairs(ARGV) do
  local bucket, job, done = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  local keep = redis.call('ZSCORE', KEYS[1], id)
  if keep then
    redis.call('ZREM', KEYS[1], id)
    local blob = redis.pcall('HGET', bucket, id)
    local fields = unpacked(redis.call('HGET', KEYS[2], id))
    if fields and (fields.s == 'failed' or fields.s == 'canceled' or fields.s == 'finished') then
      signal_end(fields, done, fields.s)
      write_ended(job, bucket, KEYS[2], KEYS[3], id, blob, fields, seconds(keep, -1))
      settled = settled + 1
    end
  end
end
return settled
