-- Record what happened to a batch of claimed jobs, fenced by each claim's token.
-- A job whose claim this worker no longer holds (its lease expired and the job was
-- recovered, or it was deleted) is left untouched: a newer attempt owns it.
-- KEYS: 1 in-flight list, then per job: job hash, started zset, target key, failed zset,
--       queue list, wake list, done list. The target is the finished, failed, canceled or
--       scheduled zset. Then the stats keys, three per queue (lib/stats.lua).
-- ARGV: 1 now (Unix seconds), 2 worker name, 3 failure ttl of a job failed as corrupt,
--       then per job: id, token, outcome (followed by ' <run time in µs>' when the job ran,
--       or ' refused' when the worker refused to run it: for the stats), payload, keep
--       seconds, run-at, queue name
--   outcome finished : payload = packed result ('' = do not keep)   -> finished registry
--           failed   : payload = traceback text                      -> failed registry
--           canceled : payload = why (traceback text); stopped on request -> canceled registry
--           retry    : payload = traceback text, back on the queue now
--           scheduled: payload = traceback text, retried at run-at     -> scheduled registry
--           released : never ran (prefetched); back to the front of the queue
--           interrupted: stopped mid-run by a cold shutdown; back to the front
--   keep: 0 delete at once, -1 keep forever, n keep n seconds (more than 100 years: forever)
-- Fields (see storage/keys.py Field): reads n, s, wt, rn, w, tl, f; writes s, en, r, x, rn, n, c, e
-- (and lib/failing.lua's for a job failed instead).
-- The script never raises on data (lib/guard.lua), so one bad job costs only itself: a job
-- whose key was overwritten by something other than a hash is failed as corrupt
-- (lib/failing.lua), and a job whose outcome cannot be written where it goes (that
-- registry or queue holds another type) is failed, with the reason, instead.
-- Returns per job: 1 recorded (now, or by an earlier try of the same call), 0 claim lost,
-- 2 failed instead, as just said (its exc_info says why).
--#include guard
--#include signal_end
--#include queueing
--#include failing
--#include stats
local now = tonumber(ARGV[1])
local now_ms = string.format('%.0f', now * 1000)
local worker, failure_ttl = ARGV[2], seconds(ARGV[3], 31536000)
local inflight_ok = fits(KEYS[1], 'list')
local out = {}
-- registry updates are gathered per key and sent as one ZREM / ZADD each
local removals, additions = {}, {}
local function gather(into, key, ...)
  local list = into[key]
  if not list then list = {}; into[key] = list end
  for _, value in ipairs({...}) do list[#list + 1] = value end
end
-- outcomes written to the target registry; any other puts the job back on its queue
local ends = {finished = true, failed = true, canceled = true, scheduled = true}

local k = 2
stats_keys_from(2 + 7 * (#ARGV - 3) / 7)
for a = 4, #ARGV, 7 do
  local id, token, outcome, payload = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local run_time
  outcome, run_time = outcome_and_run_time(outcome)
  local keep, run_at, queue_name = seconds(ARGV[a + 4], failure_ttl), ARGV[a + 5], ARGV[a + 6]
  local job, started, target, failed, queue, wake, done =
    KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]
  k = k + 7

  -- with its in-flight list overwritten, a worker's hold is judged by the record alone
  local held = inflight_ok and redis.call('LREM', KEYS[1], 1, id) or nil
  local job_ok, job_found = fits(job, 'hash')
  local f = job_ok and redis.call('HMGET', job, 'n', 's', 'wt', 'rn', 'w', 'f') or {}
  if held == nil then held = (f[5] == worker or not job_ok) and 1 or 0 end
  local function release_lease()
    if fits(started, 'zset') then gather(removals, started, id) end
  end

  if not job_ok then
    -- overwritten while it ran: it ends here, visibly
    if held == 1 then
      release_lease()
      fail_overwritten(job, id, queue_name, failed, done, now, failure_ttl, job_found, 'ran', {'n', token, 'w', worker})
      out[#out + 1] = 2
    else
      out[#out + 1] = 0
    end
  elseif held == 0 or f[1] ~= token or f[2] ~= 'started' then
    -- a retried round trip finds its own record already written: that counts as recorded
    local already = held == 0 and f[1] == token and f[5] == worker and f[2] ~= 'started'
    out[#out + 1] = already and 1 or 0
  else
    release_lease()
    local destination, kind = target, 'zset'
    if not ends[outcome] then destination, kind = queue, 'list' end
    local usable, found = fits(destination, kind)
    if not usable then
      if outcome == 'finished' and payload ~= '' then redis.call('HSET', job, 'r', payload) end
      local reason = 'corrupt: could not be recorded as ' .. outcome .. ': ' .. wrong_type(destination, kind, found)
      if outcome ~= 'finished' and outcome ~= 'released' and payload ~= '' then
        reason = reason .. '\n' .. payload
      end
      fail_job(job, id, failed, done, now, failure_ttl, reason)
      out[#out + 1] = 2
    elseif outcome == 'finished' or outcome == 'failed' or outcome == 'canceled' then
      if outcome == 'finished' then
        if f[4] then redis.call('HDEL', job, 'x') end  -- an earlier attempt's traceback
        if payload ~= '' then
          redis.call('HSET', job, 's', outcome, 'en', now_ms, 'r', payload)
        else
          redis.call('HSET', job, 's', outcome, 'en', now_ms)
        end
      else
        redis.call('HSET', job, 's', outcome, 'en', now_ms, 'x', payload)
      end
      if f[3] then
        signal_end(job, done, outcome)  -- before a keep of 0 deletes the job
      end
      if keep == 0 then
        redis.call('DEL', job)
      elseif keep < 0 then
        gather(additions, target, '+inf', id)
      else
        redis.call('EXPIRE', job, keep)
        gather(additions, target, now + keep, id)
      end
      out[#out + 1] = 1
    elseif outcome == 'scheduled' then
      incr(job, 'rn', 1)
      redis.call('HSET', job, 's', 'scheduled', 'x', payload)
      gather(additions, target, number(run_at, now, -math.huge, math.huge), id)
      out[#out + 1] = 1
    else
      if outcome == 'released' then
        incr(job, 'n', -1)
        -- it never ran: its ttl (dropped when it was claimed) applies again, from now
        local ttl = seconds(redis.call('HGET', job, 'tl'), -1)
        if ttl > 0 then redis.call('EXPIRE', job, ttl) end
      elseif outcome == 'retry' then
        incr(job, 'rn', 1)
        redis.call('HSET', job, 'x', payload)
      end
      requeued(job, now_ms)
      push(queue, wake, id, outcome ~= 'retry')
      out[#out + 1] = 1
    end
    count_outcome(queue, f[6], out[#out] == 2 and 'failed' or outcome, run_time)
  end
end
for key, ids in pairs(removals) do
  call_chunked('ZREM', key, ids)
end
for key, pairs_ in pairs(additions) do
  call_chunked('ZADD', key, pairs_)
end
write_stats(now)
return out
