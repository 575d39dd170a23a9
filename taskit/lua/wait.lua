-- Start waiting for a job: return its status and, unless it has ended, ask the worker
-- to signal its end on the done list (finish.lua pushes there only for waited jobs).
-- KEYS (all in the job's tag): 1 own hash, 2 bucket, 3 state hash
-- ARGV: 1 id
-- Fields (see storage/keys.py Field): reads s; writes wt (in the state entry).
-- A key that is not a hash is refused (WRONGTYPE) before anything is written.
-- Returns the status, or false if there is no such job.
--#include guard
--#include records
refuse_unless(KEYS[1], 'hash')
refuse_unless(KEYS[3], 'hash')
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[1], 's')
end
local record, state_fields = read_parts(KEYS[2], KEYS[3], ARGV[1])
local fields = merged(record, state_fields)
if not fields then
  return false
end
if fields.s ~= 'finished' and fields.s ~= 'failed' and fields.s ~= 'canceled' then
  local changes = state_fields or {}
  changes.wt = '1'
  write_state(KEYS[3], ARGV[1], changes)
end
return fields.s
