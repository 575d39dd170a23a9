-- The maintenance step in one tag: recover the jobs of dead workers and jobs whose lease
-- expired, drop queued jobs whose ttl ran out and registry entries whose job has expired,
-- and drop from the tag's queue set the queues whose keys are all empty. Running it twice
-- is harmless; one worker at a time runs it (next_queues.lua takes the lock, judges the
-- workers and picks the queues).
-- KEYS (one tag): the tag's keys (lib/records.lua tag_block), then the in-flight list of
--       each worker named in ARGV, then per queue: queue list, wake list, started zset,
--       scheduled zset, failed zset, finished zset, canceled zset
-- ARGV: 1 now, 2 verdict time (leases that ran out before it are judged), 3 deaths before
--       a job is abandoned, 4 default failure ttl, 5 buckets per tag, 6 n, then the n
--       workers whose in-flight lists are in KEYS, then the queue names of KEYS
-- A dead worker's jobs are found through its in-flight list in this tag: a worker whose
-- lease in the tag ran out, and whose list is not among KEYS, is returned (the caller
-- calls again with it); so is a queue one of its jobs belongs to that is not among KEYS
-- (the job waits in the list). A job whose own lease ran out is found in its queue's
-- started zset. Jobs failed here (abandoned, or that cannot go back to a broken queue) are
-- returned to be settled (settle.lua). Nothing here raises on data: a queue key of the
-- wrong type is reported (and left for an operator), a wake list repaired.
-- Returns {recovered ids, abandoned ids, dead workers handled, ids failed as corrupt,
--          broken keys (text), queues dropped, queues kept, ids to settle, workers whose
--          list is not in KEYS, queues not in KEYS}.
--#include guard
--#include records
--#include signal_end
--#include queueing
--#include failing
--#include recover
local now, cutoff = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_deaths, failure_ttl = number(ARGV[3], 3, 1, 1e9), seconds(ARGV[4], 31536000)
local outcomes = {recovered = {}, abandoned = {}, failed = {}}
local dead, broken, dropped, kept, undeclared, missing = {}, {}, {}, {}, {}, {}

local block, k = tag_block(1, tonumber(ARGV[5]))
repair(block.state, 'hash')
repair(block.expiry, 'zset')
repair(block.settle, 'zset')
repair(block.workers, 'zset')
repair(block.queues, 'set')

local lists, workers = {}, tonumber(ARGV[6])
for i = 1, workers do
  lists[ARGV[6 + i]] = KEYS[k]
  k = k + 1
end
local places, first_name = {}, 7 + workers
for q = k, #KEYS, 7 do
  local name = ARGV[first_name + (q - k) / 7]
  places[name] = {name = name, queue = KEYS[q], wake = KEYS[q + 1], started = KEYS[q + 2], scheduled = KEYS[q + 3],
                  failed = KEYS[q + 4], finished = KEYS[q + 5], canceled = KEYS[q + 6]}
end

-- Dead workers: what they held in this tag comes back now. A job is recovered (and blamed)
-- as when its lease runs out. One whose state was lost reads 'queued' with no state entry:
-- it is held, so it goes back too.
for _, name in ipairs(redis.call('ZRANGEBYSCORE', block.workers, '-inf', cutoff, 'LIMIT', 0, 100)) do
  local inflight = lists[name]
  if not inflight then
    undeclared[#undeclared + 1] = name
  else
    local ids = fits(inflight, 'list') and redis.call('LRANGE', inflight, 0, 999) or {}
    local done = true
    for _, id in ipairs(ids) do
      local record, state_fields = read_parts(bucket_of(block, id), block.state, id)
      local f = merged(record, state_fields)
      if f and ((f.s == 'started' and f.w == name) or (record and not state_fields)) then
        local place = places[f.q or 'default']
        if not place then
          missing[#missing + 1] = f.q or 'default'
          done = false
        else
          if f.s == 'started' and fits(place.started, 'zset') then redis.call('ZREM', place.started, id) end
          recover(block, id, place, now, max_deaths, failure_ttl, outcomes)
          redis.call('LREM', inflight, 0, id)
        end
      end
    end
    if done then
      redis.call('DEL', inflight)
      redis.call('ZREM', block.workers, name)
      dead[#dead + 1] = name
    end
  end
end

-- Queued jobs whose ttl ran out.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', block.expiry, '-inf', now, 'LIMIT', 0, 1000)) do
  local bucket = bucket_of(block, id)
  local f = merged(read_parts(bucket, block.state, id))
  if not f or f.s == 'queued' or f.s == 'scheduled' then
    drop_parts(bucket, block.state, block.expiry, id)
  else
    redis.call('ZREM', block.expiry, id)
  end
end

-- The queues of this step.
for q = k, #KEYS, 7 do
  local place = places[ARGV[first_name + (q - k) / 7]]
  local queue, wake, started, scheduled, failed, finished, canceled =
    place.queue, place.wake, place.started, place.scheduled, place.failed, place.finished, place.canceled
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
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', started, '-inf', cutoff, 'LIMIT', 0, 1000)) do
      redis.call('ZREM', started, id)
      recover(block, id, place, now, max_deaths, failure_ttl, outcomes)
    end
  end
  for _, registry in ipairs({failed, finished, canceled}) do
    if usable[registry] then
      redis.call('ZREMRANGEBYSCORE', registry, '-inf', '(' .. ARGV[1])
    end
  end

  -- atomic with enqueue.lua, which adds the name back with its job
  if redis.call('EXISTS', queue, started, scheduled, failed, finished, canceled) == 0 then
    redis.call('SREM', block.queues, place.name)
    redis.call('DEL', wake)
    dropped[#dropped + 1] = place.name
  else
    redis.call('SADD', block.queues, place.name)  -- back, if the set was repaired
    kept[#kept + 1] = place.name
  end
end
local settle = redis.call('ZRANGE', block.settle, 0, 99)
return {outcomes.recovered, outcomes.abandoned, dead, outcomes.failed, broken, dropped, kept, settle, undeclared, missing}
