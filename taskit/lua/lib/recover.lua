-- Shared by maintain.lua and reap.lua (pasted in where a script says --#include recover;
-- include signal_end first).
-- Put a started job whose worker died back at the front of its queue, or, once it has
-- killed max_deaths workers, fail it as abandoned. Returns 'recovered', 'abandoned', or
-- nil when the job is gone or no longer started.
local function recover(job, id, queue, wake, failed, done, now, max_deaths, default_failure_ttl)
  local f = redis.call('HMGET', job, 'worker', 'status', 'failure_ttl')
  if f[2] ~= 'started' then
    return nil
  end
  local deaths = redis.call('HINCRBY', job, 'recoveries', 1)
  if deaths < max_deaths then
    redis.call('HSET', job, 'status', 'queued', 'enqueued_at', now)
    redis.call('LPUSH', queue, id)
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 0)
    return 'recovered'
  end
  local ttl = tonumber(f[3]) or default_failure_ttl
  redis.call('HSET', job, 'status', 'failed', 'ended_at', now, 'exc_info',
    'abandoned: worker died ' .. deaths .. ' times while running this job ' ..
    '(last worker: ' .. (f[1] or '?') .. ')')
  if ttl < 0 then
    redis.call('ZADD', failed, '+inf', id)
  else
    redis.call('EXPIRE', job, ttl)
    redis.call('ZADD', failed, tonumber(now) + ttl, id)
  end
  signal_end(job, done, 'failed')
  return 'abandoned'
end
