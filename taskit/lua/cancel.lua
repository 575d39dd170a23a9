-- Cancel a job: one that has not started goes off its queue or schedule into the canceled
-- registry; for one that has started, the request is noted on the job and its worker told.
-- KEYS: 1 job hash, 2 queue list, 3 scheduled zset, 4 canceled zset, 5 done list,
--       6 packed-job bucket
-- ARGV: 1 id, 2 now, 3 keep seconds (-1 forever), 4 reason ('' none),
--       5 cancel channel prefix (+ worker name = the channel its worker listens on)
-- Fields (see storage/keys.py Field): reads s, w; writes s, en, x (why), or cx
-- (the reason, '' if none) for a started job.
-- A key of the wrong type is refused with WRONGTYPE before anything is written.
-- Returns 'ok' (canceled), 'requested' (started: its worker stops it and records it as
-- canceled), or the job's status when it cannot be canceled (false if there is no job).
--#include guard
--#include signal_end
--#include packed
refuse_unless(KEYS[1], 'hash')
refuse_unless(KEYS[2], 'list')
refuse_unless(KEYS[3], 'zset')
refuse_unless(KEYS[4], 'zset')
local now, keep = tonumber(ARGV[2]), seconds(ARGV[3], -1)
unpack_job(KEYS[1], KEYS[6], ARGV[1])
local status = redis.call('HGET', KEYS[1], 's')
-- >>> cancel a running job (issue 10)
if status == 'started' then
  -- the worker hears it at once on its channel; its heartbeat also reports the field, in
  -- case the message was missed (pub/sub keeps nothing), and a worker that claims the job
  -- later (its first worker died) records it as canceled without running it
  redis.call('HSET', KEYS[1], 'cx', ARGV[4])
  local worker = redis.call('HGET', KEYS[1], 'w')
  if worker then
    redis.call('PUBLISH', ARGV[5] .. worker, ARGV[1] .. '\n' .. ARGV[4])
  end
  return 'requested'
end
-- <<< cancel a running job
if status ~= 'queued' and status ~= 'scheduled' and status ~= 'created' then
  return status
end
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 's', 'canceled', 'en', string.format('%.0f', now * 1000),
  'x', 'canceled before it started' .. (ARGV[4] ~= '' and ': ' .. ARGV[4] or ''))
if keep < 0 then
  redis.call('PERSIST', KEYS[1])
  redis.call('ZADD', KEYS[4], '+inf', ARGV[1])
else
  redis.call('EXPIRE', KEYS[1], keep)
  redis.call('ZADD', KEYS[4], now + keep, ARGV[1])
end
signal_end(KEYS[1], KEYS[5], 'canceled')
return 'ok'
