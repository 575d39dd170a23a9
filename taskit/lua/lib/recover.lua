-- Shared by maintain.lua and reap.lua (pasted in where a script says --#include recover;
-- include guard, signal_end, queueing and failing first). Fields: reads w, s, ft, al;
-- writes rc, s, e, c, en, x; clears w.
-- Put a started job whose worker died back at the front of its queue, or, once it has
-- killed max_deaths workers, fail it as abandoned. Only a job claimed on its own ('al' 1)
-- is blamed: one claimed in a batch may not have been running. It is not counted, but
-- gets an 'rc' field, so that from now on it is claimed on its own (claim.lua).
-- `place`: {name = queue name, queue = list, wake = list, failed = zset}.
-- Returns 'recovered', 'abandoned', 'failed' (its record was overwritten, or its queue is
-- not a list: it cannot go back), or nil when the job is gone or no longer started.
local function recover_job(job, id, place, done, now, max_deaths, default_failure_ttl)
  local ok, found = fits(job, 'hash')
  if not ok then
    fail_overwritten(job, id, place.name, place.failed, done, now, default_failure_ttl, found, 'ran', {})
    return 'failed'
  end
  local f = redis.call('HMGET', job, 'w', 's', 'ft', 'al')
  if f[2] ~= 'started' then
    return nil
  end
  local deaths = incr(job, 'rc', f[4] == '1' and 1 or 0)
  local queue_ok, queue_found = fits(place.queue, 'list')
  if deaths < max_deaths and queue_ok then
    -- no worker holds it now: the one that had it learns so at its next heartbeat
    redis.call('HDEL', job, 'w')
    requeued(job, string.format('%.0f', now * 1000))
    push(place.queue, place.wake, id, true)
    return 'recovered'
  end
  local keep = seconds(f[3], default_failure_ttl)
  if deaths >= max_deaths then
    fail_job(job, id, place.failed, done, now, keep,
      'abandoned: worker died ' .. deaths .. ' times while running this job (last worker: ' .. (f[1] or '?') .. ')')
    return 'abandoned'
  end
  fail_job(job, id, place.failed, done, now, keep,
    'corrupt: its worker died and it could not go back to its queue: ' .. wrong_type(place.queue, 'list', queue_found))
  return 'failed'
end

-- recover_job, noting the id in the list of `outcomes` named by what became of it.
local function recover(job, id, place, done, now, max_deaths, default_failure_ttl, outcomes)
  local outcome = recover_job(job, id, place, done, now, max_deaths, default_failure_ttl)
  if outcome then
    local list = outcomes[outcome]
    list[#list + 1] = id
  end
end
