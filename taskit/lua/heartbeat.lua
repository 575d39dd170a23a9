-- Renew a worker's lease and the lease of every job it holds, in one step.
-- A job whose claim is no longer this worker's (recovered while this worker was paused,
-- or deleted) is not renewed; its id is returned so the worker knows it lost that claim.
-- A job this worker has just recorded is neither renewed nor lost.
-- KEYS: 1 workers zset, 2 worker hash, then per job: job hash, started zset
-- ARGV: 1 worker name, 2 lease deadline, 3 worker hash ttl seconds, then per job: id, token
-- Fields (see storage/keys.py Field): reads n, w, s, cx.
-- Returns {lost ids, {id, reason, ...} of held jobs whose cancel was requested}: the cancel
-- message on the worker's channel may have been missed (pub/sub keeps nothing).
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local lost, canceled = {}, {}
local k = 3
for a = 4, #ARGV, 2 do
  local id, token = ARGV[a], ARGV[a + 1]
  local f = redis.call('HMGET', KEYS[k], 'n', 'w', 's', 'cx')
  if not f[3] then
    -- gone (deleted, or just recorded with result_ttl=0): nothing to renew or report
  elseif f[1] ~= token or f[2] ~= ARGV[1] then
    lost[#lost + 1] = id
  elseif f[3] == 'started' then
    redis.call('ZADD', KEYS[k + 1], 'XX', ARGV[2], id)
    if f[4] then
      canceled[#canceled + 1] = id
      canceled[#canceled + 1] = f[4]
    end
  end
  k = k + 2
end
return {lost, canceled}
