-- Delete every job waiting on a queue, and the queue.
-- KEYS: 1 queue list, 2 wake list
-- ARGV: 1 job key prefix
-- Returns how many jobs were removed.
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1], KEYS[2])
return #ids
