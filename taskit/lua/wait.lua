-- Start waiting for a job: return its status and, unless it has ended, ask the worker
-- to signal its end on the done list (finish.lua pushes there only for waited jobs).
-- KEYS: 1 job hash, 2 packed-job bucket
-- ARGV: 1 id
-- Fields (see storage/keys.py Field): reads s; writes wt (a packed job gets its hash).
-- A job key that is not a hash is refused (WRONGTYPE) before anything is written.
-- Returns the status, or false if there is no such job.
--#include guard
--#include packed
refuse_unless(KEYS[1], 'hash')
unpack_job(KEYS[1], KEYS[2], ARGV[1])
local status = redis.call('HGET', KEYS[1], 's')
if status and status ~= 'finished' and status ~= 'failed' and status ~= 'canceled' then
  redis.call('HSET', KEYS[1], 'wt', '1')
end
return status
