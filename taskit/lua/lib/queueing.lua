-- Shared (include guard first). Leave one token on a wake list, which idle workers block
-- on (repaired if it is not a list: it carries no data). The push is its type check, and
-- says whether a token was there already (trimmed back to one): an idle worker took it, as
-- a rule, so the push is the only command.
local function wake_one(wake)
  if call_repairing('LPUSH', wake, '1') > 1 then
    redis.call('LTRIM', wake, '0', '0')
  end
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

-- Shared: a job becomes queued again now, by `changes` to its state entry (`fields`: all
-- of its fields). enqueued_at ('e') moves to now, and the first enqueue time is kept as
-- created_at ('c') if it was not stored apart.
local function requeued(changes, fields, now_ms)
  if not fields.c and fields.e then changes.c = fields.e end
  changes.s, changes.e = 'queued', now_ms
end

-- Shared: add `by` to a numeric field of a map, reading a missing or unreadable value as 0.
local function incr(fields, field, by)
  local value = number(fields[field], 0, -1e9, 1e9) + by
  fields[field] = string.format('%.0f', value)
  return value
end
