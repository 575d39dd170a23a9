-- Shared by maintain.lua and reap.lua (pasted in where a script says --#include recover;
-- include signal_end and queueing first). Fields: reads w, s, ft, al; writes rc, ru, s, e, c, en, x;
-- clears w.
-- Put a started job whose worker died back at the front of its queue, or, once it has
-- killed max_deaths workers, fail it as abandoned. Only a job that ran alone in its process
-- ('al' 1, see claim.lua) is blamed ('rc' + 1): any other may not have been the cause. Those
-- count as unblamed recoveries ('ru' + 1). A job blamed once or recovered unblamed twice is
-- from then on claimed only by a worker that runs it alone (claim.lua), so that the job
-- that kills workers is found while the others simply run again.
-- Returns 'recovered', 'abandoned', or nil when the job is gone or no longer started.
local function recover_job(job, id, queue, wake, failed, done, now, max_deaths, default_failure_ttl)
  local f = redis.call('HMGET', job, 'w', 's', 'ft', 'al')
  if f[2] ~= 'started' then
    return nil
  end
  -- >>> blame only a job that ran alone (issue 10)
  local deaths = 0
  if f[4] == '1' then
    deaths = incr(job, 'rc', 1)
  else
    incr(job, 'ru', 1)
  end
  -- <<< blame
  if deaths < max_deaths then
    -- no worker holds it now: the one that had it learns so at its next heartbeat
    redis.call('HDEL', job, 'w')
    requeued(job, string.format('%.0f', tonumber(now) * 1000))
    push(queue, wake, id, true)
    return 'recovered'
  end
  local ttl = tonumber(f[3]) or default_failure_ttl
  redis.call('HSET', job, 's', 'failed', 'en', string.format('%.0f', tonumber(now) * 1000), 'x',
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

-- recover_job, noting the id in `recovered` or `abandoned` by what became of it.
local function recover(job, id, queue, wake, failed, done, now, max_deaths, default_failure_ttl, recovered, abandoned)
  local outcome = recover_job(job, id, queue, wake, failed, done, now, max_deaths, default_failure_ttl)
  if outcome == 'recovered' then
    recovered[#recovered + 1] = id
  elseif outcome == 'abandoned' then
    abandoned[#abandoned + 1] = id
  end
end
