-- Recover, at once, every job a worker process held in one tag when it died (its
-- supervisor saw it die, so there is no need to wait for its lease to run out), and
-- forget the worker in that tag (the home part is store.py's: its lease and hash).
-- KEYS (one tag): 1 the worker's in-flight list, then the tag's keys (lib/records.lua
--       tag_block), then per queue of the worker in the tag: queue list, wake list, started
--       zset, failed zset
-- ARGV: 1 now, 2 worker name, 3 deaths before a job is abandoned, 4 default failure ttl,
--       5 buckets per tag, then the queue names of KEYS
-- A job of a queue not among KEYS is left alone: its lease in its started zset runs out
-- and the maintenance step recovers it.
-- Returns {recovered ids, abandoned ids, ids failed (their queue is not a list), ids to
-- settle (settle.lua)}.
--#include guard
--#include records
--#include signal_end
--#include queueing
--#include failing
--#include recover
local now = tonumber(ARGV[1])
local max_deaths, failure_ttl = number(ARGV[3], 3, 1, 1e9), seconds(ARGV[4], 31536000)
local outcomes = {recovered = {}, abandoned = {}, failed = {}}
local block, k = tag_block(2, tonumber(ARGV[5]))
repair(block.state, 'hash')
repair(block.settle, 'zset')
local places = {}
for q = k, #KEYS, 4 do
  local name = ARGV[6 + (q - k) / 4]
  places[name] = {name = name, queue = KEYS[q], wake = KEYS[q + 1], started = KEYS[q + 2], failed = KEYS[q + 3]}
end
local ids = fits(KEYS[1], 'list') and redis.call('LRANGE', KEYS[1], 0, -1) or {}
for i = #ids, 1, -1 do  -- each goes back to the queue's front: last first keeps their order
  local id = ids[i]
  local f = merged(read_parts(bucket_of(block, id), block.state, id))
  local place = f and places[f.q or 'default']
  if place and f.s == 'started' and f.w == ARGV[2] then
    if fits(place.started, 'zset') then redis.call('ZREM', place.started, id) end
    recover(block, id, place, now, max_deaths, failure_ttl, outcomes)
  end
end
redis.call('DEL', KEYS[1])
if fits(block.workers, 'zset') then redis.call('ZREM', block.workers, ARGV[2]) end
local settle = {}
for _, list in ipairs({outcomes.abandoned, outcomes.failed}) do
  for _, id in ipairs(list) do settle[#settle + 1] = id end
end
return {outcomes.recovered, outcomes.abandoned, outcomes.failed, settle}
