-- Renew the lease of every job a worker holds in one tag, and its own lease in that tag.
-- A job whose claim is no longer this worker's (recovered while this worker was paused,
-- or deleted) is not renewed; its id is returned so the worker knows it lost that claim,
-- and it leaves this worker's in-flight list. A job this worker has just recorded is
-- neither renewed nor lost. One bad key never stops the other renewals.
-- KEYS (one tag): 1 the tag's workers zset, 2 state hash, 3 the worker's in-flight list,
--       then per job: started zset
-- ARGV: 1 worker name, 2 lease deadline, then per job: id, token
-- Fields (see storage/keys.py Field): reads n, w, s, cx.
-- Returns {lost ids, {id, reason, ...} of held jobs whose cancel was requested}: the cancel
-- message on the worker's channel may have been missed (pub/sub keeps nothing).
--#include guard
--#include records
if fits(KEYS[1], 'zset') then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
end
local state_ok = fits(KEYS[2], 'hash')
local lost, canceled = {}, {}
local k = 4
for a = 3, #ARGV, 2 do
  local id, token = ARGV[a], ARGV[a + 1]
  local started = KEYS[k]
  k = k + 1
  local f = state_ok and unpacked(redis.call('HGET', KEYS[2], id)) or nil
  local renew = false
  if not state_ok then
    renew = true  -- its state was lost with the hash: its lease decides
  elseif not f then
    -- ended (just recorded), or gone: nothing to renew or report
  elseif f.n ~= token or f.w ~= ARGV[1] then
    lost[#lost + 1] = id
    if fits(KEYS[3], 'list') then redis.call('LREM', KEYS[3], 1, id) end
  else
    renew = f.s == 'started'
    -- >>> cancel a running job (issue 10)
    if renew and f.cx then
      canceled[#canceled + 1] = id
      canceled[#canceled + 1] = f.cx
    end
    -- <<< cancel
  end
  if renew and fits(started, 'zset') then
    redis.call('ZADD', started, 'XX', ARGV[2], id)
  end
end
return {lost, canceled}
