-- Set fields on a job only if it still exists (never resurrect an expired job as a stub):
-- on its own hash if it has ended, else in its state entry (lib/records.lua). A key that
-- is not a hash is refused (WRONGTYPE) before anything is written.
-- KEYS (all in the job's tag): 1 own hash, 2 bucket, 3 state hash
-- ARGV: 1 id, then field, value pairs (a few: what the caller changes)
-- Returns 1, or 0 if there is no such job.
--#include guard
--#include records
refuse_unless(KEYS[1], 'hash')
refuse_unless(KEYS[3], 'hash')
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  return 1
end
local record, state_fields = read_parts(KEYS[2], KEYS[3], ARGV[1])
if not record and not state_fields then
  return 0
end
local changes = state_fields or {}
for i = 2, #ARGV, 2 do changes[ARGV[i]] = ARGV[i + 1] end
write_state(KEYS[3], ARGV[1], changes)
return 1
