-- Recover, at once, every job a worker process held when it died (its supervisor saw it
-- die, so there is no need to wait for its lease to run out), and forget the worker.
-- KEYS: 1 in-flight list, 2 workers zset, 3 worker hash, then per held job:
--       job hash, started zset, queue list, wake list, failed zset, done list
-- ARGV: 1 now, 2 worker name, 3 deaths before a job is abandoned, 4 default failure ttl,
--       then the held job ids, in the order of their keys
-- Returns {recovered ids, abandoned ids}.
--#include signal_end
--#include queueing
--#include recover
local recovered, abandoned = {}, {}
local k = 4
for a = 5, #ARGV do
  local id = ARGV[a]
  local job, started, queue, wake, failed, done = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  k = k + 6
  if redis.call('HGET', job, 'w') == ARGV[2] then
    redis.call('ZREM', started, id)
    recover(job, id, queue, wake, failed, done, ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), recovered, abandoned)
  end
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[2])
return {recovered, abandoned}
