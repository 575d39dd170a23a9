-- Promote due scheduled jobs, then claim up to N runnable jobs for one worker.
-- A claimed job is, in the same step, moved from its queue to the worker's in-flight
-- list, marked started, given a fencing token (its attempt number) and a lease in the
-- started registry. A kill -9 at any instant leaves every job in a list or registry.
-- KEYS: 1 in-flight list, 2 workers zset, then per queue in priority order:
--       queue list, wake list, started zset, scheduled zset, failed zset
-- ARGV: 1 worker name, 2 now (Unix seconds), 3 lease deadline, 4 max jobs to claim,
--       5 job key prefix, 6 packed-job bucket prefix, 7 failure ttl of a corrupt job,
--       8.. the queue names, one per queue of KEYS
-- Fields (see storage/keys.py Field): reads s, rc, tl, n; writes s, n, st, w, al (and c, e
-- when promoting; lib/failing.lua's for a corrupt job). The returned fields are read before
-- those writes; the caller knows them.
-- A packed job (lib/packed.lua) is taken out of its bucket and given its own hash here.
-- 'al' is 1 for a job claimed on its own: only such a job is blamed if its worker dies
-- (lib/recover.lua), since in a batch it may not have been the one running.
-- The script never raises on data (lib/guard.lua): a queue whose list, started or
-- scheduled key holds another type is passed over (the maintenance step reports it); a
-- job whose key holds something other than a hash is failed as corrupt (lib/failing.lua).
-- Returns {claimed, next_run_at, corrupt} where claimed is a flat list of
--   id, attempt, queue index (0-based), {hash field/value pairs}, ... next_run_at is the
--   earliest scheduled time among the queues ('' when none is scheduled), and corrupt
--   lists the ids failed as corrupt.
--#include guard
--#include signal_end
--#include queueing
--#include packed
--#include failing
local worker, now, deadline = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now_ms = string.format('%.0f', now * 1000)
local limit, prefix, packed_prefix = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local failure_ttl = seconds(ARGV[7], 31536000)
local inflight = KEYS[1]
local claimed, corrupt, count, next_run_at = {}, {}, 0, nil
local last_key

-- The worker's own list: one overwritten has lost its ids, but each of those jobs still has
-- a lease in a started registry, which recovers it when it runs out.
repair(inflight, 'list')
repair(KEYS[2], 'zset')  -- workers' leases: every live worker renews its own at its next heartbeat

-- A job whose key was overwritten while it waited: out of the way, failed as corrupt.
local function fail_waiting(key, id, name, failed, found)
  take_packed(packed_key(packed_prefix, id), id)
  fail_overwritten(key, id, name, failed, nil, now, failure_ttl, found, 'waited', {})
  corrupt[#corrupt + 1] = id
end

for q = 3, #KEYS, 5 do
  local queue, wake, started, scheduled, failed = KEYS[q], KEYS[q + 1], KEYS[q + 2], KEYS[q + 3], KEYS[q + 4]
  local name = ARGV[8 + (q - 3) / 5]
  local usable = fits(queue, 'list') and fits(started, 'zset')
  repair(wake, 'list')  -- idle workers block on it: one of another type would wake them at once

  if usable and fits(scheduled, 'zset') then
    local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
    for _, id in ipairs(due) do
      redis.call('ZREM', scheduled, id)
      local key = prefix .. id
      local ok, found = fits(key, 'hash')
      if not ok then
        fail_waiting(key, id, name, failed, found)
      elseif redis.call('HGET', key, 's') == 'scheduled' then
        requeued(key, now_ms)
        redis.call('RPUSH', queue, id)
      end
    end
    local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
    if first[2] and (next_run_at == nil or tonumber(first[2]) < tonumber(next_run_at)) then
      next_run_at = first[2]
    end
  end

  local leases = {}
  while usable and count < limit do
    local id = redis.call('LMOVE', queue, inflight, 'LEFT', 'RIGHT')
    if not id then break end
    local key = prefix .. id
    local ok, found = fits(key, 'hash')
    local packed = ok and take_packed(packed_key(packed_prefix, id), id)
    local fields = packed or (ok and redis.call('HGETALL', key)) or {}
    local status, recovered, ttl, attempts
    for i = 1, #fields, 2 do
      local field = fields[i]
      if field == 's' then status = fields[i + 1]
      elseif field == 'rc' then recovered = true
      elseif field == 'tl' then ttl = true
      elseif field == 'n' then attempts = number(fields[i + 1], 0, 0, 1e9)
      end
    end
    if not ok then
      redis.call('LREM', inflight, -1, id)
      fail_waiting(key, id, name, failed, found)
    elseif status ~= 'queued' then
      -- expired by its ttl, deleted, or canceled: nothing to run
      redis.call('LREM', inflight, -1, id)
    elseif recovered and count > 0 then  -- (never a packed job)
      -- a job whose worker died runs in a claim of its own, so that a death is
      -- only ever blamed on the job that may have caused it
      redis.call('LMOVE', inflight, queue, 'RIGHT', 'LEFT')
      limit = count
    else
      local attempt = math.floor(attempts or 0) + 1
      if packed then redis.call('HSET', key, unpack(fields)) end  -- at most 66 values (lib/packed.lua)
      redis.call('HSET', key, 's', 'started', 'st', now_ms, 'w', worker, 'n', attempt, 'al', '0')
      last_key = key
      if ttl then redis.call('PERSIST', key) end
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      count = count + 1
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = attempt
      claimed[#claimed + 1] = (q - 3) / 5
      claimed[#claimed + 1] = fields
      if recovered then limit = count end
    end
  end
  call_chunked('ZADD', started, leases)

  if usable then
    if redis.call('LLEN', queue) > 0 then
      wake_one(wake)
    else
      redis.call('DEL', wake)
    end
  end
end

if count > 0 then
  redis.call('ZADD', KEYS[2], deadline, worker)
end
if count == 1 then
  redis.call('HSET', last_key, 'al', '1')
end
return {claimed, next_run_at or '', corrupt}
