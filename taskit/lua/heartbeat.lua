-- Renew a worker's lease and the lease of every job it holds, in one step.
-- A job whose claim is no longer this worker's (recovered while this worker was paused,
-- or deleted) is not renewed; its id is returned so the worker knows it lost that claim.
-- A job this worker has just recorded is neither renewed nor lost. A job whose key was
-- overwritten by something other than a hash keeps its lease: its worker fails it as
-- corrupt when it ends (finish.lua). One bad key never stops the other renewals.
-- A worker that could not renew for more than half its lease reports that stall here, so
-- that verdicts on leases that ran out meanwhile wait for their workers (lib/verdicts.lua).
-- KEYS: 1 workers zset, 2 worker hash, 3 maintenance hash, then per job: job hash, started zset
-- ARGV: 1 worker name, 2 lease deadline, 3 worker hash ttl seconds, 4 when the stall to
--       report began ('' = none), 5 grace seconds, then per job: id, token
-- Fields (see storage/keys.py Field): reads n, w, s.
--#include guard
--#include verdicts
repair(KEYS[1], 'zset')
repair(KEYS[2], 'hash')
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then
  hold_verdicts(KEYS[3], ARGV[4], ARGV[5])
end
local lost = {}
local k = 4
for a = 6, #ARGV, 2 do
  local id, token = ARGV[a], ARGV[a + 1]
  local job, started = KEYS[k], KEYS[k + 1]
  k = k + 2
  local renew = false
  if not fits(job, 'hash') then
    renew = true
  else
    local f = redis.call('HMGET', job, 'n', 'w', 's')
    if not f[3] then
      -- gone (deleted, or just recorded with result_ttl=0): nothing to renew or report
    elseif f[1] ~= token or f[2] ~= ARGV[1] then
      lost[#lost + 1] = id
    else
      renew = f[3] == 'started'
    end
  end
  if renew and fits(started, 'zset') then
    redis.call('ZADD', started, 'XX', ARGV[2], id)
  end
end
return lost
