-- Record what happened to a batch of claimed jobs, fenced by each claim's token.
-- A job whose claim this worker no longer holds (its lease expired and the job was
-- recovered, or it was deleted) is left untouched: a newer attempt owns it.
-- KEYS: 1 in-flight list, then per job: job hash, started zset, target key, queue list,
--       wake list, done list. The target is the finished, failed or scheduled zset.
-- ARGV: 1 now, then per job: id, token, outcome, payload, keep seconds, run-at
--   outcome finished : payload = packed result ('' = do not keep)   -> finished registry
--           failed   : payload = traceback text                      -> failed registry
--           retry    : payload = traceback text, back on the queue now
--           scheduled: payload = traceback text, retried at run-at     -> scheduled registry
--           released : never ran (prefetched); back to the front of the queue
--           interrupted: stopped mid-run by a cold shutdown; back to the front
--   keep: 0 delete at once, -1 keep forever, n keep n seconds
-- Returns one 1 (recorded) or 0 (claim lost) per job.
--#include signal_end
local now = tonumber(ARGV[1])
local out = {}
local k = 2
for a = 2, #ARGV, 6 do
  local id, token, outcome, payload = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local keep, run_at = tonumber(ARGV[a + 4]), ARGV[a + 5]
  local job, started, target, queue, wake, done =
    KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  k = k + 6

  local held = redis.call('LREM', KEYS[1], 1, id)
  local fields = redis.call('HMGET', job, 'attempts', 'status', 'waited')
  if held == 0 or fields[1] ~= token or fields[2] ~= 'started' then
    out[#out + 1] = 0
  else
    redis.call('ZREM', started, id)
    if outcome == 'finished' or outcome == 'failed' then
      local field = outcome == 'finished' and 'result' or 'exc_info'
      redis.call('HSET', job, 'status', outcome, 'ended_at', ARGV[1])
      if payload ~= '' then redis.call('HSET', job, field, payload) end
      if outcome == 'finished' then redis.call('HDEL', job, 'exc_info') end
      if keep == 0 then
        redis.call('DEL', job)
      elseif keep < 0 then
        redis.call('ZADD', target, '+inf', id)
      else
        redis.call('EXPIRE', job, keep)
        redis.call('ZADD', target, now + keep, id)
      end
      if fields[3] then
        signal_end(job, done, outcome)
      end
    elseif outcome == 'scheduled' then
      redis.call('HINCRBY', job, 'retries', 1)
      redis.call('HSET', job, 'status', 'scheduled', 'exc_info', payload)
      redis.call('ZADD', target, run_at, id)
    else
      if outcome == 'released' then
        redis.call('HINCRBY', job, 'attempts', -1)
      elseif outcome == 'retry' then
        redis.call('HINCRBY', job, 'retries', 1)
        redis.call('HSET', job, 'exc_info', payload)
      end
      redis.call('HSET', job, 'status', 'queued', 'enqueued_at', ARGV[1])
      if outcome == 'retry' then
        redis.call('RPUSH', queue, id)
      else
        redis.call('LPUSH', queue, id)
      end
      redis.call('LPUSH', wake, '1')
      redis.call('LTRIM', wake, 0, 0)
    end
    out[#out + 1] = 1
  end
end
return out
