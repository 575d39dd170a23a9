-- Record what happened to a batch of claimed jobs, fenced by each claim's token.
-- A job whose claim this worker no longer holds (its lease expired and the job was
-- recovered, or it was deleted) is left untouched: a newer attempt owns it.
-- KEYS: 1 in-flight list, then per job: job hash, started zset, target key, queue list,
--       wake list, done list. The target is the finished, failed or scheduled zset.
--       Then the stats keys, three per queue (lib/stats.lua).
-- ARGV: 1 now (Unix seconds), 2 worker name, then per job: id, token, outcome, payload,
--       keep seconds, run-at, run time in microseconds (for the stats; '' = unknown)
--   outcome finished : payload = packed result ('' = do not keep)   -> finished registry
--           failed   : payload = traceback text                      -> failed registry
--           retry    : payload = traceback text, back on the queue now
--           scheduled: payload = traceback text, retried at run-at     -> scheduled registry
--           released : never ran (prefetched); back to the front of the queue
--           interrupted: stopped mid-run by a cold shutdown; back to the front
--   keep: 0 delete at once, -1 keep forever, n keep n seconds
-- Fields (see storage/keys.py Field): reads n, s, wt, rn, w, tl, f; writes s, en, r, x, rn, n, c, e.
-- Returns one 1 (recorded, now or by an earlier try of the same call) or 0 (claim lost) per job.
--#include signal_end
--#include queueing
--#include stats
local now = tonumber(ARGV[1])
local now_ms = string.format('%.0f', now * 1000)
local out = {}
-- registry updates are gathered per key and sent as one ZREM / ZADD each
local removals, additions = {}, {}
local function gather(into, key, ...)
  local list = into[key]
  if not list then list = {}; into[key] = list end
  for _, value in ipairs({...}) do list[#list + 1] = value end
end

local worker = ARGV[2]
local k = 2
stats_keys_from(2 + 6 * (#ARGV - 2) / 7)
for a = 3, #ARGV, 7 do
  local id, token, outcome, payload = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local keep, run_at = tonumber(ARGV[a + 4]), ARGV[a + 5]
  local job, started, target, queue, wake, done =
    KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  k = k + 6

  local held = redis.call('LREM', KEYS[1], 1, id)
  local f = redis.call('HMGET', job, 'n', 's', 'wt', 'rn', 'w', 'f')
  if held == 0 or f[1] ~= token or f[2] ~= 'started' then
    -- a retried round trip finds its own record already written: that counts as recorded
    local already = held == 0 and f[1] == token and f[5] == worker and f[2] ~= 'started'
    out[#out + 1] = already and 1 or 0
  else
    gather(removals, started, id)
    if outcome ~= 'released' and outcome ~= 'interrupted' then
      count_outcome(queue, f[6], outcome, ARGV[a + 6])
    end
    if outcome == 'finished' or outcome == 'failed' then
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
    elseif outcome == 'scheduled' then
      incr(job, 'rn', 1)
      redis.call('HSET', job, 's', 'scheduled', 'x', payload)
      gather(additions, target, run_at, id)
    else
      if outcome == 'released' then
        incr(job, 'n', -1)
        -- it never ran: its ttl (dropped when it was claimed) applies again, from now
        local ttl = tonumber(redis.call('HGET', job, 'tl'))
        if ttl then redis.call('EXPIRE', job, ttl) end
      elseif outcome == 'retry' then
        incr(job, 'rn', 1)
        redis.call('HSET', job, 'x', payload)
      end
      requeued(job, now_ms)
      push(queue, wake, id, outcome ~= 'retry')
    end
    out[#out + 1] = 1
  end
end
for key, ids in pairs(removals) do
  redis.call('ZREM', key, unpack(ids))
end
for key, pairs_ in pairs(additions) do
  redis.call('ZADD', key, unpack(pairs_))
end
write_stats(now)
return out
