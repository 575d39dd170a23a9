-- Shared (include guard first). Leave one token on a wake list, which idle workers block
-- on (repaired first if it is not a list: it carries no data).
local function wake_one(wake)
  repair(wake, 'list')
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end

-- Push a job id onto its queue, and wake one idle worker when the queue was empty (a busy
-- worker claims without it, and a claim that leaves jobs behind wakes the next worker
-- itself). The caller has checked that the queue is a list.
local function push(queue, wake, id, front)
  local length = redis.call(front and 'LPUSH' or 'RPUSH', queue, id)
  if length == 1 then
    wake_one(wake)
  end
end

-- Shared: the job (a hash) becomes queued again now. enqueued_at ('e') moves to now, and
-- the first enqueue time is kept as created_at ('c') if it was not stored apart.
local function requeued(job, now_ms)
  if redis.call('HEXISTS', job, 'c') == 0 then
    local first = redis.call('HGET', job, 'e')
    if first then redis.call('HSET', job, 'c', first) end
  end
  redis.call('HSET', job, 's', 'queued', 'e', now_ms)
end

-- Shared: add `by` to a numeric job field, reading a missing or unreadable value as 0.
-- (HINCRBY would raise on a corrupt value and abort the script after its earlier writes:
-- a Redis script is not rolled back on error.)
local function incr(key, field, by)
  local value = number(redis.call('HGET', key, field), 0, -1e9, 1e9) + by
  redis.call('HSET', key, field, value)
  return value
end
