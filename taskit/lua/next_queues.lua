-- Begin a maintenance step: take the maintenance lock, and pick the queues the step visits:
-- the next chunk of the queue-name set, from a cursor kept in the maintenance hash (the
-- step saves the cursor that follows), so that one step costs Redis a bounded time however
-- many queues there are, and every queue is visited within a bounded number of steps.
-- KEYS: 1 lock, 2 maintenance hash, 3 queues set
-- ARGV: 1 lock token, 2 lock milliseconds, 3 about how many names to pick
-- Taskit's own keys of the wrong type are repaired: the lock and the maintenance hash are
-- deleted, and so is a lock with no expiry (every lock taken here expires; one that does
-- not would stop maintenance for good); so is a queue set that is not a set (it is an
-- index, rebuilt as jobs are enqueued and as workers maintain their own queues).
-- Returns {cursor after this chunk ('0' after the last), names}, or false if another
-- worker holds the lock.
--#include guard
repair(KEYS[1], 'string')
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('DEL', KEYS[1])
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
repair(KEYS[2], 'hash')
repair(KEYS[3], 'set')
local cursor = redis.call('HGET', KEYS[2], 'cursor')
if not cursor or #cursor > 19 or not string.find(cursor, '^%d+$') then
  cursor = '0'
end
return redis.call('SSCAN', KEYS[3], cursor, 'COUNT', ARGV[3])
