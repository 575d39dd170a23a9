-- Set fields on a job only if it still exists (never resurrect an expired job as a stub).
-- A packed job gets its own hash first. A job key that is not a hash is refused
-- (WRONGTYPE) before anything is written.
-- KEYS: 1 job hash, 2 packed-job bucket
-- ARGV: 1 id, then field, value pairs (a few: what the caller changes)
-- Returns 1, or 0 if there is no such job.
--#include guard
--#include packed
refuse_unless(KEYS[1], 'hash')
if not unpack_job(KEYS[1], KEYS[2], ARGV[1]) and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
