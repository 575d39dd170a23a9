-- Cancel a job that has not started: off its queue or schedule, into the canceled registry.
-- KEYS: 1 job hash, 2 queue list, 3 scheduled zset, 4 canceled zset, 5 done list,
--       6 packed-job bucket
-- ARGV: 1 id, 2 now, 3 keep seconds (-1 forever)
-- Fields (see storage/keys.py Field): reads s; writes s, en.
-- A key of the wrong type is refused with WRONGTYPE before anything is written.
-- Returns 'ok', or the job's status when it cannot be canceled (false if there is no job).
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
if status ~= 'queued' and status ~= 'scheduled' and status ~= 'created' then
  return status
end
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 's', 'canceled', 'en', string.format('%.0f', now * 1000))
if keep < 0 then
  redis.call('PERSIST', KEYS[1])
  redis.call('ZADD', KEYS[4], '+inf', ARGV[1])
else
  redis.call('EXPIRE', KEYS[1], keep)
  redis.call('ZADD', KEYS[4], now + keep, ARGV[1])
end
signal_end(KEYS[1], KEYS[5], 'canceled')
return 'ok'
