-- The maintenance step: recover jobs whose lease expired, forget dead workers, and
-- drop registry entries whose job hash has expired. One worker at a time runs it
-- (the lock); running it twice is harmless.
-- KEYS: 1 lock, 2 workers zset, then per queue: queue list, wake list, started zset,
--       failed zset, finished zset, canceled zset
-- ARGV: 1 now, 2 lock token, 3 lock milliseconds, 4 job key prefix, 5 in-flight prefix,
--       6 worker hash prefix, 7 deaths before a job is abandoned, 8 default failure ttl,
--       9 done list prefix, 10 queue list prefix, 11 wake list prefix
-- Returns {recovered ids, abandoned ids, dead worker names}, or false if the lock is held.
--#include signal_end
--#include queueing
--#include recover
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return false
end
local now = tonumber(ARGV[1])
local job_prefix, inflight_prefix, worker_prefix = ARGV[4], ARGV[5], ARGV[6]
local max_deaths, default_failure_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local recovered, abandoned, dead = {}, {}, {}

for q = 3, #KEYS, 6 do
  local queue, wake, started, failed = KEYS[q], KEYS[q + 1], KEYS[q + 2], KEYS[q + 3]
  local expired = redis.call('ZRANGEBYSCORE', started, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(expired) do
    redis.call('ZREM', started, id)
    local job = job_prefix .. id
    local worker = redis.call('HGET', job, 'w')
    if worker then redis.call('LREM', inflight_prefix .. worker, 0, id) end
    recover(job, id, queue, wake, failed, ARGV[9] .. id, ARGV[1], max_deaths, default_failure_ttl, recovered, abandoned)
  end
  for r = q + 3, q + 5 do
    redis.call('ZREMRANGEBYSCORE', KEYS[r], '-inf', '(' .. ARGV[1])
  end
end

-- A dead worker's jobs were recovered above (their leases ran out with its own). Anything
-- still in its in-flight list was never given a lease (a claim cut short): back to its queue.
local now_ms = string.format('%.0f', now * 1000)
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[2], name)
  local inflight = inflight_prefix .. name
  for _, id in ipairs(redis.call('LRANGE', inflight, 0, -1)) do
    local job = job_prefix .. id
    local f = redis.call('HMGET', job, 's', 'w', 'q')
    if f[1] == 'queued' or (f[1] == 'started' and f[2] == name) then
      local queue = f[3] or 'default'
      requeued(job, now_ms)
      push(ARGV[10] .. queue, ARGV[11] .. queue, id, true)
      recovered[#recovered + 1] = id
    end
  end
  redis.call('DEL', inflight, worker_prefix .. name)
  dead[#dead + 1] = name
end
return {recovered, abandoned, dead}
