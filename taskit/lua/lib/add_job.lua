-- Shared by enqueue.lua and periodic.lua (include queueing and packed first): write a new
-- job from ARGV[first_field..] and make it runnable, or schedule it for run_at. A job to
-- run now with no ttl is packed into its bucket; any other gets its own hash at once.
local function add_job(job, bucket, queue, wake, scheduled, queues, id, queue_name, ttl, at_front, run_at, first_field)
  if ttl == '' and run_at == '' then
    pack_job(bucket, id, first_field)
  else
    redis.call('HSET', job, unpack(ARGV, first_field))
  end
  if ttl ~= '' then
    redis.call('EXPIRE', job, ttl)
  end
  if run_at ~= '' then
    redis.call('ZADD', scheduled, run_at, id)
  else
    push(queue, wake, id, at_front == '1')
  end
  redis.call('SADD', queues, queue_name)
end

-- Whether a job with this id exists, packed or not.
local function job_exists(job, bucket, id)
  return redis.call('EXISTS', job) == 1 or redis.call('HEXISTS', bucket, id) == 1
end
