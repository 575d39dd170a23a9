-- Shared by enqueue.lua and periodic.lua (include guard, queueing and records first).
-- KEYS of a new job, from `first`: bucket, state hash, own hash (of an ended job with this
-- id), queue list, wake list, scheduled zset, the tag's queue set, and, for a job with a
-- ttl only, the expiry zset.
local function new_job_keys(first)
  return {bucket = KEYS[first], state = KEYS[first + 1], job = KEYS[first + 2], queue = KEYS[first + 3],
          wake = KEYS[first + 4], scheduled = KEYS[first + 5], queues = KEYS[first + 6], expiry = KEYS[first + 7]}
end

-- Refuse (raise, before anything is written) when a key a new job is written to holds
-- another type, or when its ttl or run-at is not a number. The wake list and the
-- queue-name set are not checked here: add_job repairs them. Returns whether a job with
-- this id exists (not ended: a record or a state entry; or ended: a hash of its own): the
-- reads that tell double as the checks of the bucket, state and own keys.
local function check_new_job(k, id, ttl, run_at)
  local exists = false
  for _, key in ipairs({k.bucket, k.state}) do
    local found = redis.pcall('HEXISTS', key, id)
    if type(found) ~= 'number' then refuse_unless(key, 'hash') end
    exists = exists or found == 1
  end
  local own = key_type(k.job)
  if own ~= 'none' then refuse_unless(k.job, 'hash') end
  refuse_unless(k.queue, 'list')
  refuse_unless(k.scheduled, 'zset')
  if ttl ~= '' then refuse_unless(k.expiry, 'zset') end
  if ttl ~= '' and not seconds(ttl, nil) then
    error(redis.error_reply('ERR taskit: ttl ' .. ttl .. ' is not a number of seconds'))
  end
  if run_at ~= '' and not number(run_at, nil, -math.huge, math.huge) then
    error(redis.error_reply('ERR taskit: run-at time ' .. run_at .. ' is not a number'))
  end
  return exists or own ~= 'none'
end

-- The enqueue time (Unix seconds) among a new job's fields (ARGV from `first`).
local function enqueued_at(first)
  for i = first, #ARGV, 2 do
    if ARGV[i] == 'e' then return (tonumber(ARGV[i + 1]) or 0) / 1000 end
  end
  return 0
end

-- A job is packed only when its fields take at most this many bytes (storage/keys.py
-- MAX_PACKED_BYTES): a packed entry can only be read whole (by a claim, or by a page that
-- shows the job: peek.lua), and packing saves a big job nothing worth having (its key's
-- ~100 bytes of bookkeeping).
local MAX_PACKED_BYTES = 4096
local function small_job(first)
  local size = 0
  for i = first, #ARGV do
    size = size + #ARGV[i]
  end
  return size <= MAX_PACKED_BYTES
end

-- Write a new job from ARGV[first_field..] and make it runnable, or schedule it for
-- run_at (call check_new_job first). Its record is packed into its bucket; a ttl is
-- kept in the expiry zset. Returns 1 if the queue was new in its tag's queue set (the
-- caller adds it to the global one).
local function add_job(k, id, queue_name, ttl, at_front, run_at, first_field)
  pack_new_job(k.bucket, id, first_field)
  local lifetime = ttl == '' and -1 or seconds(ttl, -1)
  if lifetime >= 0 then
    redis.call('ZADD', k.expiry, enqueued_at(first_field) + lifetime, id)
  end
  if run_at ~= '' then
    redis.call('ZADD', k.scheduled, run_at, id)
  else
    push(k.queue, k.wake, id, at_front == '1')
  end
  -- an index of names, rebuilt as jobs are enqueued: one of another type is replaced
  local added = redis.pcall('SADD', k.queues, queue_name)
  if type(added) ~= 'number' then
    redis.call('DEL', k.queues)
    added = redis.call('SADD', k.queues, queue_name)
  end
  return added
end

-- Whether the job stored under `id` is the one ARGV from `first` describes: the same
-- function, arguments and first enqueue time. A retried enqueue whose first reply was lost
-- finds its own write this way, and tells it from an older job with the same id.
local function is_this_job(k, id, first)
  local wanted = {}
  for i = first, #ARGV, 2 do
    wanted[ARGV[i]] = ARGV[i + 1]
  end
  local stored = merged(read_parts(k.bucket, k.state, id))
  if not stored then
    local f = redis.call('HMGET', k.job, 'f', 'a', 'c', 'e')
    stored = {f = f[1], a = f[2], c = f[3], e = f[4]}
  end
  return stored.f == wanted.f and stored.a == wanted.a and (stored.c or stored.e) == (wanted.c or wanted.e)
end
