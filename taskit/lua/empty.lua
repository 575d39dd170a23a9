-- Delete every job waiting on a queue, and the queue.
-- KEYS: 1 queue list, 2 wake list
-- ARGV: 1 job key prefix, 2 packed-job bucket prefix
-- Returns how many jobs were removed.
--#include packed
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('HDEL', packed_key(ARGV[2], id), id)
end
redis.call('DEL', KEYS[1], KEYS[2])
return #ids
