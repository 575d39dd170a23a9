-- Move a job out of a registry (failed or canceled) and back onto its queue.
-- KEYS (all in the job's tag): 1 registry zset, 2 own hash, 3 bucket, 4 state hash,
--       5 queue list, 6 wake list, 7 done list (the last end signal, which would wake a
--       new waiter at once), 8 settle zset
-- ARGV: 1 id, 2 now
-- The job leaves its own hash (or, not settled yet, its ended state) for a record in its
-- bucket and a state entry that says 'queued' (lib/records.lua).
-- Fields (see storage/keys.py Field): clears st, en, x, r, w, rc, rn, ru, cx; writes s, e, c.
-- A key of the wrong type is refused with WRONGTYPE before anything is written.
-- Returns 'ok', 'absent' (not in this registry) or 'expired' (its record is gone).
--#include guard
--#include queueing
--#include records
refuse_unless_keys({[1] = 'zset', [2] = 'hash', [3] = 'hash', [4] = 'hash', [5] = 'list'})
local id = ARGV[1]
local score = redis.call('ZSCORE', KEYS[1], id)
if not score then
  return 'absent'
end
local record, state_fields = read_parts(KEYS[3], KEYS[4], id)
local fields = merged(record, state_fields)
local own = ended_fields(KEYS[2])
local blob = own and redis.call('HGET', KEYS[2], 'p')
if own then
  fields = own
  -- what is not its record is its state (a hash written by an older taskit keeps all
  -- of it beside: it becomes the record)
  state_fields = {}
  if blob then
    local kept = redis.call('HGETALL', KEYS[2])
    for i = 1, #kept, 2 do
      if kept[i] ~= 'p' then state_fields[kept[i]] = kept[i + 1] end
    end
  end
end
redis.call('ZREM', KEYS[1], id)
if tonumber(score) <= tonumber(ARGV[2]) or not fields then
  return 'expired'
end
if fits(KEYS[8], 'zset') then redis.call('ZREM', KEYS[8], id) end
local changes = state_fields or {}
for _, name in ipairs({'st', 'en', 'x', 'r', 'w', 'rc', 'rn', 'ru', 'cx', 's', 'p'}) do
  fields[name], changes[name] = nil, nil
end
requeued(changes, fields, string.format('%.0f', tonumber(ARGV[2]) * 1000))
if own then
  -- back into its bucket, as it was enqueued
  if not blob then
    fields.e = tonumber(fields.e) or fields.e
    blob = packed(fields)
  end
  redis.call('HSET', KEYS[3], id, blob)
  redis.call('DEL', KEYS[2])
end
write_state(KEYS[4], id, changes)
redis.call('DEL', KEYS[7])
push(KEYS[5], KEYS[6], id, false)
return 'ok'
