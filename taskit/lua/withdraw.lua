-- Take back a job just enqueued whose custom id turned out to be taken in another tag (its
-- directory entry named that tag: storage/store.py `enqueue`), if no worker took it yet.
-- KEYS (the job's tag): those of enqueue.lua
-- ARGV: 1 job id, 2 the packed record it was enqueued with (to tell it from another)
-- Returns 1 taken back, 0 not (gone, not this job, or no longer waiting).
--#include guard
--#include queueing
--#include records
--#include add_job
local k = 1  -- (the job's keys start at KEYS[1])
local bucket, state, queue, scheduled, expiry = KEYS[1], KEYS[2], KEYS[4], KEYS[6], KEYS[8]
local fields = merged(read_parts(bucket, state, ARGV[1]))
if not fields or (fields.s ~= 'queued' and fields.s ~= 'scheduled') or not is_this_job(k, ARGV[1], ARGV[2]) then
  return 0
end
redis.call('LREM', queue, 0, ARGV[1])
redis.call('ZREM', scheduled, ARGV[1])
drop_parts(bucket, state, expiry, ARGV[1], expiry ~= nil)
return 1
