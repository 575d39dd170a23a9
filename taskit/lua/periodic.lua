-- Enqueue one tick of a periodic task, at most once however many workers ask.
-- KEYS[1] holds the last tick enqueued; a tick at or before it is refused. When the
-- task is seen for the first time (no last tick) a tick that is already past is only
-- remembered, not run, so a newly deployed schedule waits for its next tick. A last tick
-- that cannot be read (not a time, more than ten years after this tick, not a string) is
-- replaced by this tick, and the tick is enqueued unless its job exists (its id is the
-- same on every worker).
-- KEYS (all in the tag of the task's queue): 1 last-tick string, 2.. those of enqueue.lua
-- ARGV: 1 tick (Unix time), 2 '1' = a past tick (remember only if first seen), 3 job id,
--       4 queue name, 5 ttl seconds ('' = none), 6 run-at ('' = now), 7 the packed record
--       (lib/add_job.lua), 8 its enqueue time (Unix milliseconds)
-- Keys the job goes to are checked first (enqueue.lua), so a refused tick is not marked done.
-- Returns 1 enqueued, 0 already done (by this or another worker), 2 first seen: remembered,
-- 3 enqueued after replacing an unreadable last tick, 4 replaced it, the job already
-- exists; plus 10 when the queue was new in its tag, as enqueue.lua's.
--#include guard
--#include queueing
--#include add_job
local k = 2  -- (the job's keys start at KEYS[2])
local exists = check_new_job(k, ARGV[3], ARGV[5], ARGV[6])
local tick = unix_time(ARGV[1], nil)
if not tick then
  error(redis.error_reply('ERR taskit: tick ' .. ARGV[1] .. ' is not a time'))
end
local last, unreadable = nil, false
local found = key_type(KEYS[1])
if found == 'string' then
  last = number(redis.call('GET', KEYS[1]), nil, 0, tick + 315576000)
  unreadable = last == nil
elseif found ~= 'none' then
  unreadable = true
end
if last and last >= tick then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])  -- replaces a key of any type
if not last and not unreadable and ARGV[2] == '1' then
  return 2
end
if exists then
  return unreadable and 4 or 0
end
write_record(k, ARGV[3], ARGV[7])  -- (checked above: it is free)
local new = add_job(k, ARGV[3], ARGV[4], ARGV[5], '0', ARGV[6], ARGV[8])
return (unreadable and 3 or 1) + 10 * new
