-- Delete the jobs waiting on a queue, a bounded chunk per call (one long script would
-- block Redis: half a million jobs took 1.9 s). The first call moves the whole queue
-- aside, at once, to its emptying list; each call then deletes up to N jobs from there.
-- Jobs enqueued meanwhile wait on a new queue and are kept. An emptying list left by an
-- interrupted call is finished first, then the queue is moved.
-- KEYS (the queue's tag): 1 queue list, 2 wake list, 3 emptying list, then the tag's keys
--       (lib/records.lua tag_block)
-- ARGV: 1 N, 2 '1' = move the queue aside (if its emptying list is empty), 3 buckets per tag
-- A queue that is not a list is refused (WRONGTYPE) before anything is written.
-- Returns {jobs deleted by this call, jobs left to delete, 1 if the queue was moved aside}.
--#include guard
--#include records
refuse_unless(KEYS[1], 'list')
repair(KEYS[3], 'list')
local block = tag_block(4, tonumber(ARGV[3]))
local state_ok = fits(block.state, 'hash')
local moved = 0
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('RENAME', KEYS[1], KEYS[3])
  end
  redis.call('DEL', KEYS[2])
  moved = 1
end
local ids = redis.call('LRANGE', KEYS[3], 0, tonumber(ARGV[1]) - 1)
for _, id in ipairs(ids) do
  redis.pcall('HDEL', bucket_of(block, id), id)  -- a bucket that is not a hash holds no job
  if state_ok then redis.call('HDEL', block.state, id) end
  redis.pcall('ZREM', block.expiry, id)
end
redis.call('LTRIM', KEYS[3], #ids, -1)
return {#ids, redis.call('LLEN', KEYS[3]), moved}
