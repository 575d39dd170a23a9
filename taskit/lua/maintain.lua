-- The maintenance step: recover the jobs of dead workers and jobs whose lease expired,
-- forget dead workers, drop registry entries whose job hash has expired, and drop from the
-- queue set the queues whose keys are all empty. Running it twice is harmless; one worker
-- at a time runs it (next_queues.lua takes the lock and picks the queues it visits).
-- KEYS: 1 workers zset, 2 maintenance hash, 3 queues set, then per queue: queue list,
--       wake list, started zset, scheduled zset, failed zset, finished zset, canceled zset
-- ARGV: 1 now, 2 job key prefix, 3 in-flight prefix, 4 worker hash prefix, 5 deaths before
--       a job is abandoned, 6 default failure ttl, 7 done list prefix, 8 queue list prefix,
--       9 wake list prefix, 10 started zset prefix, 11 failed zset prefix, 12 the queue-set
--       cursor to save ('' = leave it), 13 when the stall to report began ('' = none),
--       14 grace seconds, 15 n, then n names to drop from the queue set (not queue names:
--       unreadable), then the queue names of KEYS, one per queue
-- A dead worker's jobs are found through its in-flight list, so they come back at the first
-- step after its lease runs out, whichever queues that step visits; a job whose own lease
-- ran out is found in its queue's started zset, when a step visits that queue. Verdicts
-- wait while a stall is reported (lib/verdicts.lua). Nothing here raises on data: a queue
-- key of the wrong type is reported (and left for an operator), a wake list repaired.
-- Returns {recovered ids, abandoned ids, dead worker names, ids failed as corrupt,
--          broken keys (text), how many queues were dropped from the queue set}.
--#include guard
--#include signal_end
--#include queueing
--#include failing
--#include recover
--#include verdicts
local now = tonumber(ARGV[1])
local job_prefix, inflight_prefix, worker_prefix = ARGV[2], ARGV[3], ARGV[4]
local max_deaths, failure_ttl = number(ARGV[5], 3, 1, 1e9), seconds(ARGV[6], 31536000)
local done_prefix = ARGV[7]
local outcomes = {recovered = {}, abandoned = {}, failed = {}}
local dead, broken, dropped = {}, {}, 0

repair(KEYS[1], 'zset')
repair(KEYS[3], 'set')
if ARGV[13] ~= '' then
  hold_verdicts(KEYS[2], ARGV[13], ARGV[14])
end
local cutoff = verdict_time(KEYS[2], now)
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[2], 'cursor', ARGV[12])
end
local drops = tonumber(ARGV[15])
for i = 16, 15 + drops do
  redis.call('SREM', KEYS[3], ARGV[i])
end
local first_name = 16 + drops

-- A queue name as storage/keys.py allows it (job.validate_id): keys are built from it.
local function valid_name(name)
  return #name <= 128 and string.find(name, '^[%w_.:@%-]+$') ~= nil and string.find(name, '[^.]') ~= nil
end

-- Dead workers: what they held comes back now. A job is recovered (and blamed) as when its
-- lease runs out; one the claim had not marked started yet goes back to its queue.
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, 100)) do
  redis.call('ZREM', KEYS[1], name)
  local inflight = inflight_prefix .. name
  local ids = fits(inflight, 'list') and redis.call('LRANGE', inflight, 0, 999) or {}
  for _, id in ipairs(ids) do
    local job = job_prefix .. id
    -- a job that cannot be read here keeps its lease in its queue's started zset
    local f = key_type(job) == 'hash' and redis.call('HMGET', job, 's', 'w', 'q') or {}
    local queue_name = f[3] or 'default'
    if valid_name(queue_name) and (f[1] == 'queued' or (f[1] == 'started' and f[2] == name)) then
      local place = {name = queue_name, queue = ARGV[8] .. queue_name, wake = ARGV[9] .. queue_name,
                     failed = ARGV[11] .. queue_name}
      if f[1] == 'started' then
        local started = ARGV[10] .. queue_name
        if fits(started, 'zset') then redis.call('ZREM', started, id) end
        recover(job, id, place, done_prefix .. id, now, max_deaths, failure_ttl, outcomes)
      elseif fits(place.queue, 'list') then
        requeued(job, string.format('%.0f', now * 1000))
        push(place.queue, place.wake, id, true)
        outcomes.recovered[#outcomes.recovered + 1] = id
      end
    end
  end
  redis.call('DEL', inflight, worker_prefix .. name)
  dead[#dead + 1] = name
end

-- The queues of this step.
for q = 4, #KEYS, 7 do
  local queue, wake, started, scheduled, failed, finished, canceled =
    KEYS[q], KEYS[q + 1], KEYS[q + 2], KEYS[q + 3], KEYS[q + 4], KEYS[q + 5], KEYS[q + 6]
  local name = ARGV[first_name + (q - 4) / 7]
  local kinds = {[queue] = 'list', [started] = 'zset', [scheduled] = 'zset', [failed] = 'zset',
                 [finished] = 'zset', [canceled] = 'zset'}
  local usable = {}
  for _, key in ipairs({queue, started, scheduled, failed, finished, canceled}) do
    local ok, found = fits(key, kinds[key])
    usable[key] = ok
    if not ok then broken[#broken + 1] = wrong_type(key, kinds[key], found) end
  end
  repair(wake, 'list')

  if usable[started] then
    local place = {name = name, queue = queue, wake = wake, failed = failed}
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', started, '-inf', cutoff, 'LIMIT', 0, 1000)) do
      redis.call('ZREM', started, id)
      local job = job_prefix .. id
      local worker = key_type(job) == 'hash' and redis.call('HGET', job, 'w')
      if worker and fits(inflight_prefix .. worker, 'list') then
        redis.call('LREM', inflight_prefix .. worker, 0, id)
      end
      recover(job, id, place, done_prefix .. id, now, max_deaths, failure_ttl, outcomes)
    end
  end
  for _, registry in ipairs({failed, finished, canceled}) do
    if usable[registry] then
      redis.call('ZREMRANGEBYSCORE', registry, '-inf', '(' .. ARGV[1])
    end
  end

  -- atomic with enqueue.lua, which adds the name back with its job
  if redis.call('EXISTS', queue, started, scheduled, failed, finished, canceled) == 0 then
    redis.call('SREM', KEYS[3], name)
    redis.call('DEL', wake)
    dropped = dropped + 1
  else
    redis.call('SADD', KEYS[3], name)  -- back, if the set was repaired
  end
end
return {outcomes.recovered, outcomes.abandoned, dead, outcomes.failed, broken, dropped}
