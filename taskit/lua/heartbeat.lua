-- Renew a worker's lease (the home part of a heartbeat; renew.lua renews its jobs' leases
-- in each tag, in the same round trip).
-- A worker that could not renew for more than half its lease reports that stall here, so
-- that verdicts on leases that ran out meanwhile wait for their workers (lib/verdicts.lua).
-- KEYS (home tag): 1 workers zset, 2 worker hash, 3 maintenance hash
-- ARGV: 1 worker name, 2 lease deadline, 3 worker hash ttl seconds, 4 when the stall to
--       report began ('' = none), 5 grace seconds
-- Returns 1.
--#include guard
--#include verdicts
repair(KEYS[1], 'zset')
repair(KEYS[2], 'hash')
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then
  hold_verdicts(KEYS[3], ARGV[4], ARGV[5])
end
return 1
