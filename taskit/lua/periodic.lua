-- Enqueue one tick of a periodic task, at most once however many workers ask.
-- KEYS[1] holds the last tick enqueued; a tick at or before it is refused. When the
-- task is seen for the first time (no last tick) a tick that is already past is only
-- remembered, not run, so a newly deployed schedule waits for its next tick.
-- KEYS: 1 last-tick string, 2 job hash, 3 packed-job bucket, 4 queue list, 5 wake list,
--       6 scheduled zset, 7 queues set
-- ARGV: 1 tick (Unix time), 2 '1' = a past tick (remember only if first seen), 3 job id,
--       4 queue name, 5 ttl seconds ('' = none), 6 run-at ('' = now), 7.. field, value pairs
-- Returns 1 enqueued, 0 already done (by this or another worker), 2 first seen: remembered.
--#include queueing
--#include packed
--#include add_job
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
if not last and ARGV[2] == '1' then
  return 2
end
if job_exists(KEYS[2], KEYS[3], ARGV[3]) then
  return 0
end
add_job(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[3], ARGV[4], ARGV[5], '0', ARGV[6], 7)
return 1
