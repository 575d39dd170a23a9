-- Set fields on a job only if it still exists (never resurrect an expired job as a stub).
-- KEYS: 1 job hash
-- ARGV: field, value pairs
-- Returns 1, or 0 if there is no such job.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
