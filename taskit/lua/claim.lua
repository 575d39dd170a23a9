-- Promote due scheduled jobs, then claim up to N runnable jobs for one worker.
-- A claimed job is, in the same step, moved from its queue to the worker's in-flight
-- list, marked started, given a fencing token (its attempt number) and a lease in the
-- started registry. A kill -9 at any instant leaves every job in a list or registry.
-- KEYS: 1 in-flight list, 2 workers zset, then per queue in priority order:
--       queue list, wake list, started zset, scheduled zset
-- ARGV: 1 worker name, 2 now (Unix seconds), 3 lease deadline, 4 max jobs to claim,
--       5 job key prefix, 6 packed-job bucket prefix, 7 alone ('1': the worker holds
--       nothing else), 8 id and 9 token of a job the worker holds with 'al' 1 and will now
--       no longer run alone ('' for none)
-- Fields (see storage/keys.py Field): reads s, rc, ru, tl, n; writes s, n, st, w, al (and c, e
-- when promoting). The returned fields are read before those writes; the caller knows them.
-- A packed job (lib/packed.lua) is taken out of its bucket and given its own hash here.
-- 'al' is 1 for a job claimed on its own by a worker that holds nothing else: only such a
-- job is blamed if its worker dies (lib/recover.lua). A worker that claims more while it
-- runs passes it as ARGV 8-9, so its 'al' is 0 before the others are claimed. A
-- quarantined job (blamed once, or recovered unblamed twice) is claimed only alone; a
-- busy worker's claim stops at it and says 'drain' (finish, then claim alone).
-- The script never raises on a job's corrupt field: Redis does not roll a script back.
-- Returns {claimed, next_run_at, quarantine} where claimed is a flat list of
--   id, attempt, queue index (0-based), {hash field/value pairs}, ..., next_run_at is
--   the earliest scheduled time among the queues ('' when none is scheduled), and
--   quarantine is '' , 'drain' (a quarantined job waits for a worker that holds nothing)
--   or 'alone' (the one job claimed is quarantined: claim nothing more while it runs).
--#include queueing
--#include packed
local worker, now, deadline = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now_ms = string.format('%.0f', now * 1000)
local limit, prefix, packed_prefix = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local inflight = KEYS[1]
local claimed, count, next_run_at = {}, 0, nil
local last_key
-- >>> blame only a job that ran alone (issue 10)
local alone, quarantine = ARGV[7] == '1', ''
if ARGV[8] and ARGV[8] ~= '' then
  local key = prefix .. ARGV[8]
  local f = redis.call('HMGET', key, 'n', 'w', 's')
  if f[1] == ARGV[9] and f[2] == worker and f[3] == 'started' then
    redis.call('HSET', key, 'al', '0')
  end
end
-- <<< blame

for q = 3, #KEYS, 4 do
  local queue, wake, started, scheduled = KEYS[q], KEYS[q + 1], KEYS[q + 2], KEYS[q + 3]

  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', scheduled, id)
    if redis.call('HGET', prefix .. id, 's') == 'scheduled' then
      requeued(prefix .. id, now_ms)
      redis.call('RPUSH', queue, id)
    end
  end
  local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  if first[2] and (next_run_at == nil or tonumber(first[2]) < tonumber(next_run_at)) then
    next_run_at = first[2]
  end

  local leases = {}
  while count < limit do
    local id = redis.call('LMOVE', queue, inflight, 'LEFT', 'RIGHT')
    if not id then break end
    local key = prefix .. id
    local packed = take_packed(packed_key(packed_prefix, id), id)
    local fields = packed or redis.call('HGETALL', key)
    local status, blamed, unblamed, ttl, attempts
    for i = 1, #fields, 2 do
      local name = fields[i]
      if name == 's' then status = fields[i + 1]
      elseif name == 'rc' then blamed = tonumber(fields[i + 1])
      elseif name == 'ru' then unblamed = tonumber(fields[i + 1])
      elseif name == 'tl' then ttl = true
      elseif name == 'n' then attempts = tonumber(fields[i + 1])
      end
    end
    local quarantined = (blamed or 0) > 0 or (unblamed or 0) >= 2  -- (never a packed job)
    if status ~= 'queued' then
      -- expired by its ttl, deleted, or canceled: nothing to run
      redis.call('LREM', inflight, -1, id)
    elseif quarantined and (count > 0 or not alone) then
      -- it runs only alone in its process, so that a death is only ever blamed on the
      -- job that may have caused it: back to the head, for a worker that holds nothing
      redis.call('LMOVE', inflight, queue, 'RIGHT', 'LEFT')
      limit = count
      quarantine = 'drain'
    else
      local attempt = (attempts or 0) + 1
      if packed then redis.call('HSET', key, unpack(fields)) end
      redis.call('HSET', key, 's', 'started', 'st', now_ms, 'w', worker, 'n', attempt, 'al', '0')
      last_key = key
      if ttl then redis.call('PERSIST', key) end
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      count = count + 1
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = attempt
      claimed[#claimed + 1] = (q - 3) / 4
      claimed[#claimed + 1] = fields
      if quarantined then
        limit = count
        quarantine = 'alone'
      end
    end
  end
  if #leases > 0 then
    redis.call('ZADD', started, unpack(leases))
  end

  if redis.call('LLEN', queue) > 0 then
    redis.call('LPUSH', wake, '1')
    redis.call('LTRIM', wake, 0, 0)
  else
    redis.call('DEL', wake)
  end
end

if count > 0 then
  redis.call('ZADD', KEYS[2], deadline, worker)
end
if count == 1 and alone then
  redis.call('HSET', last_key, 'al', '1')
end
return {claimed, next_run_at or '', quarantine}
