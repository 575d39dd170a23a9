-- Promote due scheduled jobs, then claim up to N runnable jobs for one worker.
-- A claimed job is, in the same step, moved from its queue to the worker's in-flight
-- list, marked started, given a fencing token (its attempt number) and a lease in the
-- started registry. A kill -9 at any instant leaves every job in a list or registry.
-- KEYS: 1 in-flight list, 2 workers zset, then per queue in priority order:
--       queue list, wake list, started zset, scheduled zset
-- ARGV: 1 worker name, 2 now, 3 lease deadline, 4 max jobs to claim, 5 job key prefix
-- Returns {claimed, next_run_at} where claimed is a flat list of
--   id, attempt, queue index (0-based), {hash field/value pairs}, ... and next_run_at is the earliest scheduled
--   time among the queues ('' when none is scheduled).
local worker, now, deadline = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local limit, prefix = tonumber(ARGV[4]), ARGV[5]
local inflight = KEYS[1]
local claimed, count, next_run_at = {}, 0, nil

for q = 3, #KEYS, 4 do
  local queue, wake, started, scheduled = KEYS[q], KEYS[q + 1], KEYS[q + 2], KEYS[q + 3]

  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', scheduled, id)
    if redis.call('HGET', prefix .. id, 'status') == 'scheduled' then
      redis.call('HSET', prefix .. id, 'status', 'queued', 'enqueued_at', ARGV[2])
      redis.call('RPUSH', queue, id)
    end
  end
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  if first[2] and (next_run_at == nil or tonumber(first[2]) < next_run_at) then
    next_run_at = tonumber(first[2])
  end

  while count < limit do
    local id = redis.call('LMOVE', queue, inflight, 'LEFT', 'RIGHT')
    if not id then break end
    local key = prefix .. id
    local f = redis.call('HMGET', key, 'status', 'recoveries')
    if f[1] ~= 'queued' then
      -- expired by its ttl, deleted, or canceled: nothing to run
      redis.call('LREM', inflight, -1, id)
    elseif f[2] and count > 0 then
      -- a job whose worker died runs in a claim of its own, so that a death is
      -- only ever blamed on the job that may have caused it
      redis.call('LMOVE', inflight, queue, 'RIGHT', 'LEFT')
      limit = count
    else
      local attempt = redis.call('HINCRBY', key, 'attempts', 1)
      redis.call('HSET', key, 'status', 'started', 'started_at', ARGV[2], 'worker', worker)
      redis.call('PERSIST', key)
      redis.call('ZADD', started, deadline, id)
      count = count + 1
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = attempt
      claimed[#claimed + 1] = (q - 3) / 4
      claimed[#claimed + 1] = redis.call('HGETALL', key)
      if f[2] then limit = count end
    end
  end

  if redis.call('LLEN', queue) > 0 then
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 0)
  else
    redis.call('DEL', wake)
  end
end

if count > 0 then
  redis.call('ZADD', KEYS[2], deadline, worker)
end
return {claimed, next_run_at and tostring(next_run_at) or ''}
