-- Shared by maintain.lua and reap.lua (pasted in where a script says --#include recover;
-- include guard, records, signal_end, queueing and failing first). Fields: reads w, s, ft,
-- al; writes rc, ru, s, e, c (and failing.lua's); clears w.
-- Put a started job whose worker died back at the front of its queue, or, once it has
-- killed max_deaths workers, fail it as abandoned. Only a job that ran alone in its process
-- ('al' 1, see claim.lua) is blamed ('rc' + 1): any other may not have been the cause. Those
-- count as unblamed recoveries ('ru' + 1). A job blamed once or recovered unblamed twice is
-- from then on claimed only by a worker that runs it alone (claim.lua), so that the job
-- that kills workers is found while the others simply run again.
-- `place`: {name = queue name, queue = list, wake = list, failed = zset}; `block`: its
-- tag's keys (lib/records.lua). A job whose state was lost (a record and no state entry:
-- it reads 'queued') goes back to its queue too: it is held, so it waits nowhere else.
-- Returns 'recovered', 'abandoned', 'failed' (its queue is not a list: it cannot go back),
-- or nil when the job is gone, or no longer started.
local function recover_job(block, id, place, now, max_deaths, default_failure_ttl)
  local record, changes = read_parts(bucket_of(block, id), block.state, id)
  local fields = merged(record, changes)
  if not fields or not (fields.s == 'started' or (record and not changes)) then
    return nil
  end
  changes = changes or {}
  -- >>> blame only a job that ran alone (issue 10)
  local deaths = 0
  if fields.s == 'started' then
    if fields.al == '1' then
      deaths = incr(changes, 'rc', 1)
    else
      incr(changes, 'ru', 1)
    end
  end
  -- <<< blame
  local queue_ok, queue_found = fits(place.queue, 'list')
  if deaths < max_deaths and queue_ok then
    -- no worker holds it now: the one that had it learns so at its next heartbeat
    changes.w = nil
    requeued(changes, fields, string.format('%.0f', now * 1000))
    write_state(block.state, id, changes)
    push(place.queue, place.wake, id, true)
    return 'recovered'
  end
  local keep = seconds(fields.ft, default_failure_ttl)
  if deaths >= max_deaths then
    fail_later(block, id, changes, place.failed, now, keep,
      'abandoned: worker died ' .. deaths .. ' times while running this job (last worker: ' .. (fields.w or '?') .. ')')
    return 'abandoned'
  end
  fail_later(block, id, changes, place.failed, now, keep,
    'corrupt: its worker died and it could not go back to its queue: ' .. wrong_type(place.queue, 'list', queue_found))
  return 'failed'
end

-- recover_job, noting the id in the list of `outcomes` named by what became of it.
local function recover(block, id, place, now, max_deaths, default_failure_ttl, outcomes)
  local outcome = recover_job(block, id, place, now, max_deaths, default_failure_ttl)
  if outcome then
    local list = outcomes[outcome]
    list[#list + 1] = id
  end
end
