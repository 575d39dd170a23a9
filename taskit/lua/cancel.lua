-- Cancel a job: one that has not started goes off its queue or schedule into the canceled
-- registry; for one that has started, the request is noted on the job and its worker told.
-- KEYS (all in the job's tag): 1 own hash, 2 bucket, 3 state hash, 4 expiry zset,
--       5 queue list, 6 scheduled zset, 7 canceled zset, 8 done list
-- ARGV: 1 id, 2 now, 3 keep seconds (-1 forever), 4 reason ('' none),
--       5 cancel channel prefix (+ worker name = the channel its worker listens on)
-- Fields (see storage/keys.py Field): reads s, w; writes s, en, x (why), or cx
-- (the reason, '' if none) for a started job.
-- A key of the wrong type is refused with WRONGTYPE before anything is written.
-- Returns 'ok' (canceled), 'requested' (started: its worker stops it and records it as
-- canceled), or the job's status when it cannot be canceled (false if there is no job).
--#include guard
--#include records
--#include signal_end
refuse_unless_keys({[1] = 'hash', [2] = 'hash', [3] = 'hash', [5] = 'list', [6] = 'zset', [7] = 'zset'})
local id = ARGV[1]
local now, keep = tonumber(ARGV[2]), seconds(ARGV[3], -1)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[1], 's')  -- ended
end
local record, state_fields = read_parts(KEYS[2], KEYS[3], id)
local fields = merged(record, state_fields)
if not fields then
  return false
end
-- >>> cancel a running job (issue 10)
if fields.s == 'started' then
  -- the worker hears it at once on its channel; its heartbeat also reports the field, in
  -- case the message was missed (pub/sub keeps nothing), and a worker that claims the job
  -- later (its first worker died) records it as canceled without running it
  local changes = state_fields or {}
  changes.cx = ARGV[4]
  write_state(KEYS[3], id, changes)
  if fields.w then
    redis.call('PUBLISH', ARGV[5] .. fields.w, id .. '\n' .. ARGV[4])
  end
  return 'requested'
end
-- <<< cancel a running job
if fields.s ~= 'queued' and fields.s ~= 'scheduled' and fields.s ~= 'created' then
  return fields.s
end
redis.call('LREM', KEYS[5], 0, id)
redis.call('ZREM', KEYS[6], id)
redis.call('ZREM', KEYS[4], id)
local changes = state_fields or {}
changes.s, changes.en = 'canceled', string.format('%.0f', now * 1000)
changes.x = 'canceled before it started' .. (ARGV[4] ~= '' and ': ' .. ARGV[4] or '')
signal_end(changes, KEYS[8], 'canceled')
write_ended(KEYS[1], KEYS[2], KEYS[3], KEYS[4], id, redis.call('HGET', KEYS[2], id), changes, keep)
redis.call('ZADD', KEYS[7], keep < 0 and '+inf' or now + keep, id)
return 'ok'
