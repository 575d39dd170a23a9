-- Recover, at once, every job a worker process held when it died (its supervisor saw it
-- die, so there is no need to wait for its lease to run out), and forget the worker.
-- KEYS: 1 in-flight list, 2 workers zset, 3 worker hash, then per held job:
--       job hash, started zset, queue list, wake list, failed zset, done list
-- ARGV: 1 now, 2 worker name, 3 deaths before a job is abandoned, 4 default failure ttl,
--       then per held job, in the order of their keys: id, queue name
-- A job whose key is not a hash is left alone: its lease in its started zset runs out and
-- the maintenance step fails it as corrupt.
-- Returns {recovered ids, abandoned ids, ids failed (their queue is not a list)}.
--#include guard
--#include signal_end
--#include queueing
--#include failing
--#include recover
local now = tonumber(ARGV[1])
local max_deaths, failure_ttl = number(ARGV[3], 3, 1, 1e9), seconds(ARGV[4], 31536000)
local outcomes = {recovered = {}, abandoned = {}, failed = {}}
local k = 4
for a = 5, #ARGV, 2 do
  local id, name = ARGV[a], ARGV[a + 1]
  local job, started, queue, wake, failed, done = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  k = k + 6
  if key_type(job) == 'hash' and redis.call('HGET', job, 'w') == ARGV[2] then
    if fits(started, 'zset') then redis.call('ZREM', started, id) end
    recover(job, id, {name = name, queue = queue, wake = wake, failed = failed}, done, now, max_deaths, failure_ttl, outcomes)
  end
end
redis.call('DEL', KEYS[1], KEYS[3])
repair(KEYS[2], 'zset')
redis.call('ZREM', KEYS[2], ARGV[2])
return {outcomes.recovered, outcomes.abandoned, outcomes.failed}
