-- Promote due scheduled jobs, then claim up to N runnable jobs for one worker.
-- A claimed job is, in the same step, moved from its queue to the worker's in-flight
-- list of its tag, marked started in its state entry, given a fencing token (its attempt
-- number) and a lease in the started registry. A kill -9 at any instant leaves every job
-- in a list or registry. The claim never needs a job's own key: the record stays in its
-- bucket (lib/records.lua), and only the state entry is written.
-- KEYS: per tag block: in-flight list of the worker in that tag, then the tag's keys
--       (lib/records.lua tag_block); then per queue in priority order: queue list, wake
--       list, started zset, scheduled zset, failed zset
-- ARGV: 1 worker name, 2 now (Unix seconds; '' for Redis's clock), 3 lease deadline (with
--       ARGV 2 '': the lease in seconds), 4 max jobs to claim,
--       5 failure ttl of a corrupt job, 6 alone ('1': the worker holds nothing else),
--       7 id and 8 token of a job the worker holds with 'al' 1 and will now no longer run
--       alone ('' for none), 9 the block of its tag (0 for none), 10 buckets per tag,
--       11 number of blocks, 12.. per queue: its name, its block (1-based)
-- On a single Redis one call may cover several tags; on a cluster each call covers one
-- (storage/store.py sends one call per slot, in priority order).
-- Fields (see storage/keys.py Field): reads s, rc, ru, tl, n; writes s, n, st, w, al (and
-- c, e when promoting; lib/failing.lua's for a corrupt job). The returned fields are read
-- before those writes; the caller knows them.
-- 'al' is 1 for a job claimed on its own by a worker that holds nothing else: only such a
-- job is blamed if its worker dies (lib/recover.lua). A worker that claims more while it
-- runs passes it as ARGV 7-9, so its 'al' is 0 before the others are claimed. A
-- quarantined job (blamed once, or recovered unblamed twice) is claimed only alone; a
-- busy worker's claim stops at it and says 'drain' (finish, then claim alone).
-- The script never raises on data (lib/guard.lua): a queue whose list, started or
-- scheduled key holds another type is passed over (the maintenance step reports it); a
-- job whose bucket holds something other than a hash is failed as corrupt (lib/failing.lua).
-- Returns {claimed, next_run_at, corrupt, quarantine, now} where claimed is a flat list of
--   id, attempt, queue index (0-based), packed record, {field/value pairs of its state
--   entry}, ... (the state overrides the record; storage/store.py merges them) next_run_at is the
--   earliest scheduled time among the queues ('' when none is scheduled), corrupt lists
--   the ids failed as corrupt, and quarantine is '', 'drain' (a quarantined job waits for
--   a worker that holds nothing) or 'alone' (the one job claimed is quarantined: claim
--   nothing more while it runs).
--#include guard
--#include records
--#include signal_end
--#include queueing
--#include failing
local worker, now, deadline = ARGV[1], tonumber(ARGV[2]), ARGV[3]
-- >>> pickup (issue 13): ARGV 2 '' = Redis's clock when the script runs, ARGV 3 then the
-- lease in seconds (a claim pipelined behind an idle worker's blocking wait runs whenever
-- the wait ends: storage/store.py Store.wait_and_claim); the time used is returned 5th
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  deadline = string.format('%.6f', now + tonumber(ARGV[3]))
end
-- <<< pickup
local now_ms = string.format('%.0f', now * 1000)
local limit = tonumber(ARGV[4])
local failure_ttl = seconds(ARGV[5], 31536000)
local buckets = tonumber(ARGV[10])
local claimed, corrupt, count, next_run_at = {}, {}, 0, nil
local last  -- {block, id, fields} of the last job claimed

local blocks, k = {}, 1
for b = 1, tonumber(ARGV[11]) do
  local inflight = KEYS[k]
  local block
  block, k = tag_block(k + 1, buckets)
  block.inflight, block.claimed = inflight, 0
  -- The worker's own list: one overwritten has lost its ids, but each of those jobs still
  -- has a lease in a started registry, which recovers it when it runs out. So does a state
  -- hash overwritten (its jobs read as queued: recovery puts them back).
  repair(block.inflight, 'list')
  repair(block.state, 'hash')
  repair(block.expiry, 'zset')
  repair(block.settle, 'zset')
  repair(block.workers, 'zset')  -- leases: every live worker renews its own at its next heartbeat
  block.expiring = redis.call('ZCARD', block.expiry) > 0  -- (else no job of the tag has a ttl)
  blocks[b] = block
end

-- >>> blame only a job that ran alone (issue 10)
local alone, quarantine = ARGV[6] == '1', ''
if ARGV[7] ~= '' and blocks[tonumber(ARGV[9])] then
  local block = blocks[tonumber(ARGV[9])]
  local fields = unpacked(redis.call('HGET', block.state, ARGV[7]))
  if fields and fields.n == ARGV[8] and fields.w == worker and fields.s == 'started' then
    fields.al = '0'
    write_state(block.state, ARGV[7], fields)
  end
end
-- <<< blame

-- A job whose bucket was overwritten while it waited: failed as corrupt.
local function fail_waiting(block, id, name, failed, bucket, found)
  fail_later(block, id, {f = '', q = name}, failed, now, failure_ttl,
    'corrupt: its record (' .. bucket .. ') was overwritten by a ' .. found .. ' while it waited; '
    .. 'this failed record replaces it')
  corrupt[#corrupt + 1] = id
end

-- The packed record of a job the claim meets (false if it has none), or nil (and the job
-- failed) when its bucket is broken.
local function record_of(block, id, name, failed)
  local bucket = bucket_of(block, id)
  local blob = redis.pcall('HGET', bucket, id)
  if type(blob) == 'table' and blob.err then
    local _, found = fits(bucket, 'hash')
    fail_waiting(block, id, name, failed, bucket, found)
    return nil, bucket
  end
  return blob, bucket
end

local queues = 0
for q = k, #KEYS, 5 do
  local queue, wake, started, scheduled, failed = KEYS[q], KEYS[q + 1], KEYS[q + 2], KEYS[q + 3], KEYS[q + 4]
  local name, block = ARGV[12 + 2 * queues], blocks[tonumber(ARGV[13 + 2 * queues])]
  local index = queues
  queues = queues + 1
  local usable = fits(queue, 'list') and fits(started, 'zset')
  repair(wake, 'list')  -- idle workers block on it: one of another type would wake them at once

  if usable and fits(scheduled, 'zset') then
    local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
    for _, id in ipairs(due) do
      redis.call('ZREM', scheduled, id)
      local blob = record_of(block, id, name, failed)
      if blob ~= nil then
        local state_fields = unpacked(redis.call('HGET', block.state, id))
        local fields = merged(unpacked(blob), state_fields)
        if fields and fields.s == 'scheduled' then
          local changes = state_fields or {}
          requeued(changes, fields, now_ms)
          write_state(block.state, id, changes)
          redis.call('RPUSH', queue, id)
        end
      end
    end
    local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
    if first[2] and (next_run_at == nil or tonumber(first[2]) < tonumber(next_run_at)) then
      next_run_at = first[2]
    end
  end

  -- (the record is not unpacked: what the claim reads is in the state entry, which a job
  -- not yet claimed has not; the worker unpacks the record)
  local leases = {}
  while usable and count < limit do
    local id = redis.call('LMOVE', queue, block.inflight, 'LEFT', 'RIGHT')
    if not id then break end
    local blob, bucket = record_of(block, id, name, failed)
    local fields = blob and (unpacked(redis.call('HGET', block.state, id)) or {}) or nil
    local ttl, expired = nil, false
    if fields and block.expiring then
      ttl = redis.call('ZSCORE', block.expiry, id)
      if ttl and tonumber(ttl) <= now and (fields.s or 'queued') == 'queued' then
        expired = true
        drop_parts(bucket, block.state, block.expiry, id)
      end
    end
    local blamed = fields and number(fields.rc, 0, 0, 1e9) or 0
    local unblamed = fields and number(fields.ru, 0, 0, 1e9) or 0
    local quarantined = blamed > 0 or unblamed >= 2
    if not fields or (fields.s or 'queued') ~= 'queued' or expired then
      -- gone (expired by its ttl, deleted, canceled) or failed as corrupt: nothing to run
      redis.call('LREM', block.inflight, -1, id)
    elseif quarantined and (count > 0 or not alone) then
      -- it runs only alone in its process, so that a death is only ever blamed on the
      -- job that may have caused it: back to the head, for a worker that holds nothing
      redis.call('LMOVE', block.inflight, queue, 'RIGHT', 'LEFT')
      limit = count
      quarantine = 'drain'
    else
      if blamed + unblamed > 0 then
        -- recovered before: a copy left in this worker's list by a claim it lost goes
        redis.call('LREM', block.inflight, 0, id)
        redis.call('RPUSH', block.inflight, id)
      end
      local attempt = math.floor(number(fields.n, 0, 0, 1e9)) + 1
      local before = flat(fields)
      local changes = fields
      changes.s, changes.st, changes.w, changes.n, changes.al = 'started', now_ms, worker, tostring(attempt), '0'
      write_state(block.state, id, changes)
      if ttl then redis.call('ZREM', block.expiry, id) end
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      count = count + 1
      block.claimed = block.claimed + 1
      last = {block, id, changes}
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = attempt
      claimed[#claimed + 1] = index
      claimed[#claimed + 1] = blob
      claimed[#claimed + 1] = before
      if quarantined then
        limit = count
        quarantine = 'alone'
      end
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

for _, block in ipairs(blocks) do
  if block.claimed > 0 then
    redis.call('ZADD', block.workers, deadline, worker)
  end
end
if count == 1 and alone then
  last[3].al = '1'
  write_state(last[1].state, last[2], last[3])
end
return {claimed, next_run_at or '', corrupt, quarantine, string.format('%.6f', now)}
