-- Shared by enqueue.lua and periodic.lua (include queueing first): write a new job's hash
-- from ARGV[first_field..] and make it runnable, or schedule it for run_at.
local function add_job(job, queue, wake, scheduled, queues, id, queue_name, ttl, at_front, run_at, first_field)
  redis.call('HSET', job, unpack(ARGV, first_field))
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
