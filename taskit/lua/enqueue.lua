-- Write a new job and make it runnable, in one step.
-- KEYS: 1 job hash, 2 queue list, 3 wake list, 4 scheduled zset, 5 queues set
-- ARGV: 1 job id, 2 queue name, 3 ttl seconds ('' = none), 4 at_front ('1'/'0'),
--       5 run-at time ('' = run now), 6.. field, value pairs for the hash
-- Returns 1, or 0 when a job with this id already exists (nothing is written).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
if ARGV[3] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
else
  if ARGV[4] == '1' then
    redis.call('LPUSH', KEYS[2], ARGV[1])
  else
    redis.call('RPUSH', KEYS[2], ARGV[1])
  end
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 0)
end
redis.call('SADD', KEYS[5], ARGV[2])
return 1
