-- Shared by enqueue.lua, periodic.lua and withdraw.lua (include guard and queueing first).
-- A new job's record comes packed by the client (storage/store.py `pack_record`), as
-- lib/records.lua keeps it: msgpack [field, value, ...], no 'queued' status, the enqueue
-- time 'e' a number.

-- KEYS of a new job, from KEYS[k] on (`k`: where the script's block of them starts), at
-- these offsets:
--   k bucket, k + 1 state hash, k + 2 own hash (of an ended job with this id), k + 3 queue
--   list, k + 4 wake list, k + 5 scheduled zset, k + 6 the tag's queue set, and, for a job
--   with a ttl only, k + 7 the expiry zset.
-- Each function names those it uses from KEYS. (Not a table of them, nor offsets held in
-- named locals: a table, or each local a function captures, is an object Redis makes at
-- every enqueue; eight of them cost it about 5k instructions, 8% of an enqueue.)

-- Refuse (raise, before anything is written) a ttl or run-at that is not a number.
local function check_numbers(ttl, run_at)
  if ttl ~= '' and not seconds(ttl, nil) then
    error(redis.error_reply('ERR taskit: ttl ' .. ttl .. ' is not a number of seconds'))
  end
  if run_at ~= '' and not number(run_at, nil, -math.huge, math.huge) then
    error(redis.error_reply('ERR taskit: run-at time ' .. run_at .. ' is not a number'))
  end
end

-- Whether a job with this id exists apart from a record in its bucket: an ended job's own
-- hash, or a state entry. The state entry is looked up only for an id not made by taskit
-- (`made` false): a job's state entry never outlives its record (every script drops both),
-- which write_record's HSETNX checks, but an id chosen by hand may meet an entry left by
-- hand. The own hash is always looked up: an enqueue's first send may reach Redis late,
-- after its retry wrote the job and a worker ended it. A state hash or own key of another
-- type is refused.
local function exists_apart(k, id, made)
  local state, job = KEYS[k + 1], KEYS[k + 2]
  if not made then
    local found = redis.pcall('HEXISTS', state, id)
    if type(found) ~= 'number' then refuse_unless(state, 'hash') end
    if found == 1 then return true end
  end
  if redis.call('EXISTS', job) == 0 then return false end
  refuse_unless(job, 'hash')
  return true
end

-- Write the packed record `blob` unless the bucket has one for this id: HSETNX is the
-- check that the id is free and that the bucket is a hash (refused, nothing written, if
-- not). Returns whether it was written.
local function write_record(k, id, blob)
  local bucket = KEYS[k]
  local written = redis.pcall('HSETNX', bucket, id, blob)
  if type(written) ~= 'number' then
    refuse_unless(bucket, 'hash')
    error(written)  -- not a type: a replica (READONLY), no memory left...: raised as redis.call would
  end
  return written == 1
end

-- Refuse every key a new job is written to that holds another type, before anything is
-- written (periodic.lua, which must know before it marks a tick done). Returns whether a
-- job with this id exists.
local function check_new_job(k, id, ttl, run_at)
  check_numbers(ttl, run_at)
  local exists = exists_apart(k, id)
  local bucket, queue, scheduled, expiry = KEYS[k], KEYS[k + 3], KEYS[k + 5], KEYS[k + 7]
  local found = redis.pcall('HEXISTS', bucket, id)
  if type(found) ~= 'number' then refuse_unless(bucket, 'hash') end
  refuse_unless(queue, 'list')
  refuse_unless(scheduled, 'zset')
  if ttl ~= '' then refuse_unless(expiry, 'zset') end
  return exists or found == 1
end

-- Undo what add_job wrote before a key refused a write (its error `reply`), and raise:
-- WRONGTYPE naming the key, or the error itself.
local function undo_and_refuse(k, id, lifetime, key, kind, reply)
  redis.call('HDEL', KEYS[k], id)  -- (its bucket)
  if lifetime >= 0 then redis.call('ZREM', KEYS[k + 7], id) end  -- (the expiry zset)
  refuse_unless(key, kind)
  error(reply)
end

-- After `write_record`: make the job runnable, or schedule it for run_at; a ttl is kept
-- in the expiry zset (from `enqueued`, the enqueue time in Unix milliseconds). Each write
-- is tried, and a data key of another type undoes the writes before it and is refused, so
-- nothing stays half-written (and no TYPE is paid on the way). A scheduled job checks the
-- queue list too (it is pushed there later); a job that runs now never touches the
-- scheduled zset, so it is not refused for it (a claim passes a broken one over, and the
-- maintenance step reports it). The queue is put in its tag's queue set when the job is
-- scheduled or the push made the list: a list that was there already means the queue is
-- in the set (only maintain.lua takes a name out, and only when the queue has no keys at
-- all). Returns 1 if the queue was new in its tag's queue set (the caller adds it to the
-- global one).
local function add_job(k, id, queue_name, ttl, at_front, run_at, enqueued)
  local queue = KEYS[k + 3]
  local lifetime = ttl == '' and -1 or seconds(ttl, -1)
  if lifetime >= 0 then
    local expiry = KEYS[k + 7]
    local reply = redis.pcall('ZADD', expiry, (tonumber(enqueued) or 0) / 1000 + lifetime, id)
    if type(reply) == 'table' then
      undo_and_refuse(k, id, -1, expiry, 'zset', reply)  -- (-1: nothing written there to undo)
    end
  end
  if run_at ~= '' then
    local scheduled = KEYS[k + 5]
    local reply = redis.pcall('LLEN', queue)
    if type(reply) ~= 'number' then undo_and_refuse(k, id, lifetime, queue, 'list', reply) end
    reply = redis.pcall('ZADD', scheduled, run_at, id)
    if type(reply) ~= 'number' then undo_and_refuse(k, id, lifetime, scheduled, 'zset', reply) end
  else
    local front = at_front == '1'  -- (apart: tests/test_connections.py reads the commands off the call)
    local length = redis.pcall(front and 'LPUSH' or 'RPUSH', queue, id)
    if type(length) ~= 'number' then undo_and_refuse(k, id, lifetime, queue, 'list', length) end
    if length > 1 then
      return 0
    end
    wake_one(KEYS[k + 4])  -- (its wake list) the queue was empty, as queueing.lua's push does
  end
  -- the tag's queue set, an index of names rebuilt as jobs are enqueued: one of another
  -- type is replaced
  return call_repairing('SADD', KEYS[k + 6], queue_name)
end

-- Whether the job stored under `id` is the one whose packed record is `blob`: a retried
-- enqueue whose first reply was lost finds its own write this way (the same bytes: the
-- same function, arguments, options and enqueue time, to the millisecond), and tells it
-- from an older job with the same id. Its record is in its bucket (a claim leaves it there)
-- or, once it ended, in its own hash, field p.
local function is_this_job(k, id, blob)
  local bucket, job = KEYS[k], KEYS[k + 2]
  local stored = redis.pcall('HGET', bucket, id)
  if type(stored) ~= 'string' then
    stored = redis.pcall('HGET', job, 'p')
  end
  return stored == blob
end
