-- Begin a maintenance step (the home tag's part): take the maintenance lock, judge the
-- workers' leases, and pick the queues the step visits: the next chunk of the queue-name
-- set, from a cursor kept in the maintenance hash (the step saves the cursor that
-- follows), so that one step costs Redis a bounded time however many queues there are,
-- and every queue is visited within a bounded number of steps.
-- KEYS (home tag): 1 lock, 2 maintenance hash, 3 queues set, 4 workers zset
-- ARGV: 1 lock token, 2 lock milliseconds, 3 about how many names to pick, 4 now,
--       5 when the stall to report began ('' = none), 6 grace seconds
-- Workers whose lease ran out before the verdict time (now, or during a hold the time a
-- reported stall began: lib/verdicts.lua) are forgotten here; what they held is recovered
-- in each tag (maintain.lua), where their leases ran out too. The queues each registered
-- (field q:<name> of the maintenance hash) come back with them, so that the step visits
-- their tags. Taskit's own keys of the wrong type are repaired: the lock and the
-- maintenance hash are deleted, and so is a lock with no expiry (every lock taken here
-- expires; one that does not would stop maintenance for good); so is a queue set or
-- workers zset that is not one (indexes, rebuilt as jobs are enqueued and workers beat).
-- Returns {cursor after this chunk ('0' after the last), names, verdict time, dead
-- workers, their queues (comma-separated, '' if unknown)}, or false if another worker
-- holds the lock.
--#include guard
--#include verdicts
repair(KEYS[1], 'string')
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('DEL', KEYS[1])
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
repair(KEYS[2], 'hash')
repair(KEYS[3], 'set')
repair(KEYS[4], 'zset')
local now = tonumber(ARGV[4])
if ARGV[5] ~= '' then
  hold_verdicts(KEYS[2], ARGV[5], ARGV[6])
end
local cutoff = verdict_time(KEYS[2], now)
local dead, their_queues = {}, {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', cutoff, 'LIMIT', 0, 100)) do
  redis.call('ZREM', KEYS[4], name)
  dead[#dead + 1] = name
  their_queues[#their_queues + 1] = redis.call('HGET', KEYS[2], 'q:' .. name) or ''
  redis.call('HDEL', KEYS[2], 'q:' .. name)
end
local cursor = redis.call('HGET', KEYS[2], 'cursor')
if not cursor or #cursor > 19 or not string.find(cursor, '^%d+$') then
  cursor = '0'
end
local scan = redis.call('SSCAN', KEYS[3], cursor, 'COUNT', ARGV[3])
return {scan[1], scan[2], string.format('%.6f', cutoff), dead, their_queues}
