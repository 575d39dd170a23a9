-- Move a job out of a registry (failed or canceled) and back onto its queue.
-- KEYS: 1 registry zset, 2 job hash, 3 queue list, 4 wake list, 5 done list (the last end
--       signal, which would wake a new waiter at once)
-- ARGV: 1 id, 2 now
-- Returns 'ok', 'absent' (not in this registry) or 'expired' (its record is gone).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 'absent'
end
if tonumber(score) <= tonumber(ARGV[2]) or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'expired'
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], 'started_at', 'ended_at', 'exc_info', 'result', 'worker', 'recoveries', 'retries')
redis.call('HSET', KEYS[2], 'status', 'queued', 'enqueued_at', ARGV[2])
redis.call('PERSIST', KEYS[2])
redis.call('DEL', KEYS[5])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 0)
return 'ok'
