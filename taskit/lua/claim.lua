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
-- Returns, packed with cmsgpack (one bulk string, which a client reads in one step rather
-- than element by element: storage/store.py _parse_claim),
--   {claimed, next_run_at, corrupt, quarantine, now} where claimed is a flat list of
--   id, attempt, queue index (0-based), packed record, {field/value pairs of its state
--   entry} ('' when it had none), ... (the state overrides the record; storage/store.py
--   merges them); next_run_at is the earliest scheduled time among the queues ('' when
--   none is scheduled), corrupt lists
--   the ids failed as corrupt, and quarantine is '', 'drain' (a quarantined job waits for
--   a worker that holds nothing) or 'alone' (the one job claimed is quarantined: claim
--   nothing more while it runs).
--#include guard
--#include records
--#include signal_end
--#include queueing
--#include failing
-- (each text read as a number once, and a whole number printed with '%d': printf and strtod
-- of a fraction cost about as much as a Redis command each)
local worker, now, deadline, deadline_at = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[3])
local now_text  -- now with six decimals, returned 5th: the time the claim used
-- ARGV 2 '' = Redis's clock when the script runs, ARGV 3 then the
-- lease in seconds (a claim pipelined behind an idle worker's blocking wait runs whenever
-- the wait ends: storage/store.py Store.wait_and_claim)
if ARGV[2] == '' then
  local t, lease = redis.call('TIME'), deadline_at
  local whole = tonumber(t[1])
  now = whole + tonumber(t[2]) / 1e6
  deadline_at = now + lease
  -- the texts '%.6f' would print, put together from the clock's seconds and microseconds
  local micro = string.sub('00000' .. t[2], -6)
  now_text = t[1] .. '.' .. micro
  if lease == math.floor(lease) then
    deadline = string.format('%d.%s', whole + lease, micro)
  else
    deadline = string.format('%.6f', deadline_at)
  end
else
  now_text = string.format('%.6f', now)
end
local now_ms = string.format('%d', math.floor(now * 1000 + 0.5))
local limit = tonumber(ARGV[4])
local failure_ttl = seconds(ARGV[5], 31536000)
local buckets = tonumber(ARGV[10])
local claimed, corrupt, count, next_run_at = {}, {}, 0, nil
-- the state entry of a job claimed for its first time: the same for all of them
local fresh_entry = cmsgpack.pack({'s', 'started', 'st', now_ms, 'w', worker, 'n', '1', 'al', '0'})
-- A lease's score in the started registry: its deadline, rounded up to the second when the
-- lease is 10 s or more (at most 10% longer; the default is 20 s). A whole number is kept as
-- an integer in a small zset (a listpack), and Redis then places each new entry without
-- parsing every score before it as text (strtod): a third of the cost of a ZADD there.
local lease_score = deadline
if (deadline_at or now) - now >= 10 then lease_score = string.format('%d', math.ceil(deadline_at)) end
-- (shared, never changed) the state entry returned for a job that had none: an empty text, not
-- an empty table (Redis turns each table of a reply into a reply by looking up several
-- fields of it first: err, ok, double, ...: a third of a µs per job); a claimed job's fields
local NOTHING, STARTED = '', {s = 'started'}
local WINDOW = 1000  -- ids read from a queue at a time (unpack() takes at most about 8,000)
local last_block, last_entry, last_changes  -- the last job claimed: its tag, where its state entry is in the
-- tag's writes, its state fields (nil: fresh_entry)

local blocks, k = {}, 1
for b = 1, tonumber(ARGV[11]) do
  local inflight = KEYS[k]
  local block
  block, k = tag_block(k + 1, buckets)
  block.inflight, block.claimed = inflight, 0
  -- what the claim writes in the tag, sent at the end: ids for the in-flight list, id,
  -- entry pairs for the state hash (and the fields of each, for a second look at the same
  -- id), ids whose ttl no longer applies
  block.pushed, block.writes, block.written, block.unexpire = {}, {}, {}, {}
  -- A state hash overwritten is deleted (its jobs read as queued: recovery puts them back
  -- when their leases run out) when first read: by the HMGET of the queue's head, whose
  -- error is the check (the blame and the promotion of due jobs, which read it before,
  -- repair it first). So are the worker's own list (one overwritten has lost its ids, but
  -- each of those jobs still has a lease in a started registry) and the tag's worker
  -- leases (every live worker renews its own at its next heartbeat), when written at the
  -- end (write_repairing), and the settle zset when a job is failed into it (fail_later).
  -- (else no job of the tag has a ttl; the count doubles as the expiry zset's type check)
  local expiring = redis.pcall('ZCARD', block.expiry)
  if type(expiring) == 'table' then  -- another type: repaired
    redis.call('DEL', block.expiry)
    expiring = 0
  end
  block.expiring = expiring > 0
  blocks[b] = block
end

-- >>> blame only a job that ran alone (issue 10)
local alone, quarantine = ARGV[6] == '1', ''
if ARGV[7] ~= '' and blocks[tonumber(ARGV[9])] then
  local block = blocks[tonumber(ARGV[9])]
  repair(block.state, 'hash')
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
  if blob and blob.err then  -- (an error reply: a text's .err is nil, and asking costs less than a type())
    local _, found = fits(bucket, 'hash')
    fail_waiting(block, id, name, failed, bucket, found)
    return nil, bucket
  end
  return blob, bucket
end

-- Claim a job: noted for the in-flight list, its state entry, its lease and the reply.
-- `changes`: its state fields as written (nil for `fresh_entry`); `ttl`: it had one.
local leases, leased, listed = nil, 0, 0  -- this queue's leased ids (all of one score), their count; items in `claimed`
local function take(block, id, attempt, index, blob, before, entry, changes, ttl)
  local n = block.claimed + 1
  block.claimed = n
  block.pushed[n] = id
  local writes = block.writes
  writes[2 * n - 1], writes[2 * n] = id, entry
  block.written[id] = changes or STARTED
  if ttl then block.unexpire[#block.unexpire + 1] = id end
  leased = leased + 1
  leases[leased] = id
  count = count + 1
  last_block, last_entry, last_changes = block, 2 * n, changes
  claimed[listed + 1], claimed[listed + 2], claimed[listed + 3], claimed[listed + 4], claimed[listed + 5] =
    id, attempt, index, blob, before
  listed = listed + 5
end

local queues = 0
for q = k, #KEYS, 5 do
  local queue, wake, started, scheduled, failed = KEYS[q], KEYS[q + 1], KEYS[q + 2], KEYS[q + 3], KEYS[q + 4]
  local name, block = ARGV[12 + 2 * queues], blocks[tonumber(ARGV[13 + 2 * queues])]
  local index = queues
  queues = queues + 1
  -- the queue's length doubles as its list's type check: a queue whose list or started zset
  -- holds another type is passed over (the maintenance step reports it)
  local length = redis.pcall('LLEN', queue)
  if index == 0 and type(length) == 'table' and not string.find(length.err, 'WRONGTYPE', 1, true) then
    -- another refusal (an ACL user without LLEN) is raised, as redis.call would, while the
    -- claim has written nothing; a later queue's is passed over (raising then would leave
    -- the jobs taken before it out of every list)
    error(length)
  end
  local usable = type(length) == 'number' and fits(started, 'zset')
  -- idle workers block on the wake list: one of another type would wake them at once (a
  -- usable queue's is repaired at its end, by wake_one or DEL)
  if not usable then repair(wake, 'list') end

  -- the earliest scheduled job (the reply doubles as the zset's type check: another type is
  -- passed over); when it is due, the due ones are promoted
  -- (indexes as text: Redis prints a number argument with snprintf, about the cost of a
  -- short command)
  local first = usable and redis.pcall('ZRANGE', scheduled, '0', '0', 'WITHSCORES')
  if first and not first.err and first[2] and tonumber(first[2]) <= now then
    local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
    repair(block.state, 'hash')
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
          length = redis.call('RPUSH', queue, id)
        end
      end
    end
    first = redis.call('ZRANGE', scheduled, '0', '0', 'WITHSCORES')
  end
  if first and not first.err and first[2] and (next_run_at == nil or tonumber(first[2]) < tonumber(next_run_at)) then
    next_run_at = first[2]
  end

  -- (the record is not unpacked: what the claim reads is in the state entry, which a job
  -- not yet claimed has not; the worker unpacks the record)
  -- The head of the queue is read a window at a time, with the state entries of the window
  -- in one HMGET; the ids consumed (claimed, or dropped as gone) are trimmed off in one
  -- LTRIM and the claimed ones pushed onto the in-flight list in one RPUSH, their state
  -- entries written in one HSET per tag at the end (one command per job fewer than popping
  -- them one by one; the script is atomic, so a kill -9 still finds each job in a list).
  local taken, stop = 0, not usable or length == 0
  leases, leased = {}, 0
  while not stop and count < limit do
    local wanted = math.min(limit - count, WINDOW)
    local ids = redis.call('LRANGE', queue, taken, taken + wanted - 1)
    if #ids == 0 then break end
    local entries = redis.pcall('HMGET', block.state, unpack(ids))
    if entries.err then  -- a state hash of another type: deleted (see the tag's block), read as empty
      if not string.find(entries.err, 'WRONGTYPE', 1, true) then error(entries) end
      redis.call('DEL', block.state)
      entries = {}
    end
    local ttls = block.expiring and redis.call('ZMSCORE', block.expiry, unpack(ids)) or {}
    for i = 1, #ids do  -- (not ipairs: a C call a step)
      local id = ids[i]
      if count >= limit then stop = true; break end
      local blob, bucket = record_of(block, id, name, failed)
      if blob and not entries[i] and not ttls[i] and not block.written[id] then
        -- the usual case, in short: waiting, never claimed, no ttl
        taken = taken + 1
        take(block, id, 1, index, blob, NOTHING, fresh_entry, nil, false)
      else
        local fields = nil
        if blob then fields = block.written[id] or unpacked(entries[i]) or {} end
        local ttl, expired = ttls[i], false
        if fields and ttl then
          if tonumber(ttl) <= now and (fields.s or 'queued') == 'queued' then
            expired = true
            drop_parts(bucket, block.state, block.expiry, id)
          end
        end
        local blamed = fields and number(fields.rc, 0, 0, 1e9) or 0
        local unblamed = fields and number(fields.ru, 0, 0, 1e9) or 0
        local quarantined = blamed > 0 or unblamed >= 2
        if not fields or (fields.s or 'queued') ~= 'queued' or expired then
          -- gone (expired by its ttl, deleted, canceled) or failed as corrupt: nothing to run
          taken = taken + 1
        elseif quarantined and (count > 0 or not alone) then
          -- it runs only alone in its process, so that a death is only ever blamed on the
          -- job that may have caused it: left at the head, for a worker that holds nothing
          limit = count
          quarantine = 'drain'
          stop = true
          break
        else
          taken = taken + 1
          if blamed + unblamed > 0 then
            -- recovered before: a copy left in this worker's list by a claim it lost goes
            redis.pcall('LREM', block.inflight, 0, id)  -- (a list of another type is replaced at the end)
          end
          local attempt = math.floor(number(fields.n, 0, 0, 1e9)) + 1
          local before = flat(fields)
          local changes = fields
          changes.s, changes.st, changes.w, changes.n, changes.al = 'started', now_ms, worker, tostring(attempt), '0'
          take(block, id, attempt, index, blob, before, packed(changes), changes, ttl ~= false and ttl ~= nil)
          if quarantined then
            limit = count
            quarantine = 'alone'
          end
        end
      end
    end
    if #ids < wanted then break end
  end
  if taken > 0 and taken == length then
    redis.call('DEL', queue)  -- all consumed (an LTRIM's numbers cost more)
  elseif taken > 0 then
    redis.call('LTRIM', queue, taken, '-1')
  end
  -- the leases, added in descending order (`in_byte_order`)
  in_byte_order(leases)
  local pairs_ = {}
  for i = leased, 1, -1 do
    pairs_[2 * (leased - i) + 1], pairs_[2 * (leased - i) + 2] = lease_score, leases[i]
  end
  call_chunked('ZADD', started, pairs_)

  if usable then
    if length - taken > 0 then
      wake_one(wake)
    else
      redis.call('DEL', wake)
    end
  end
end

if count == 1 and alone then
  local changes = last_changes or {s = 'started', st = now_ms, w = worker, n = '1'}
  changes.al = '1'
  last_block.writes[last_entry] = packed(changes)
end
for _, block in ipairs(blocks) do
  if block.claimed > 0 then
    call_chunked('HSET', block.state, block.writes)
    write_repairing('RPUSH', block.inflight, block.pushed)
    call_chunked('ZREM', block.expiry, block.unexpire)
    write_repairing('ZADD', block.workers, {deadline, worker})
  end
end
return cmsgpack.pack({claimed, next_run_at or '', corrupt, quarantine, now_text})
