-- Shared by enqueue.lua and periodic.lua (include guard, queueing and packed first).

-- Refuse (raise, before anything is written) when a key a new job is written to holds
-- another type, or when its ttl or run-at is not a number. The wake list and the
-- queue-name set are not checked here: add_job repairs them.
local function check_new_job(job, bucket, queue, scheduled, ttl, run_at)
  refuse_unless(job, 'hash')
  refuse_unless(bucket, 'hash')
  refuse_unless(queue, 'list')
  refuse_unless(scheduled, 'zset')
  if ttl ~= '' and not seconds(ttl, nil) then
    error(redis.error_reply('ERR taskit: ttl ' .. ttl .. ' is not a number of seconds'))
  end
  if run_at ~= '' and not number(run_at, nil, -math.huge, math.huge) then
    error(redis.error_reply('ERR taskit: run-at time ' .. run_at .. ' is not a number'))
  end
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
-- run_at (call check_new_job first). A small job to run now with no ttl is packed into
-- its bucket; any other gets its own hash at once.
local function add_job(job, bucket, queue, wake, scheduled, queues, id, queue_name, ttl, at_front, run_at, first_field)
  if ttl == '' and run_at == '' and small_job(first_field) then
    pack_job(bucket, id, first_field)
  else
    redis.call('HSET', job, unpack(ARGV, first_field))
  end
  local expiry = ttl == '' and -1 or seconds(ttl, -1)
  if expiry >= 0 then
    redis.call('EXPIRE', job, expiry)
  end
  if run_at ~= '' then
    redis.call('ZADD', scheduled, run_at, id)
  else
    push(queue, wake, id, at_front == '1')
  end
  repair(queues, 'set')  -- an index of names, rebuilt as jobs are enqueued
  redis.call('SADD', queues, queue_name)
end

-- Whether a job with this id exists, packed or not (its bucket checked to be a hash).
local function job_exists(job, bucket, id)
  return redis.call('EXISTS', job) == 1 or redis.call('HEXISTS', bucket, id) == 1
end

-- Whether the job stored under `id` is the one ARGV from `first` describes: the same
-- function, arguments and first enqueue time. A retried enqueue whose first reply was lost
-- finds its own write this way, and tells it from an older job with the same id.
local function is_this_job(job, bucket, id, first)
  local wanted, stored = {}, {}
  for i = first, #ARGV, 2 do
    wanted[ARGV[i]] = ARGV[i + 1]
  end
  local packed = read_packed(bucket, id)
  if packed then
    for i = 1, #packed, 2 do
      stored[packed[i]] = packed[i + 1]
    end
  elseif key_type(job) == 'hash' then
    local f = redis.call('HMGET', job, 'f', 'a', 'c', 'e')
    stored = {f = f[1], a = f[2], c = f[3], e = f[4]}
  end
  return stored.f == wanted.f and stored.a == wanted.a and (stored.c or stored.e) == (wanted.c or wanted.e)
end
