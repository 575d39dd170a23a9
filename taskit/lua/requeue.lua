-- Move a job out of a registry (failed or canceled) and back onto its queue.
-- KEYS: 1 registry zset, 2 job hash, 3 queue list, 4 wake list, 5 done list (the last end
--       signal, which would wake a new waiter at once)
-- ARGV: 1 id, 2 now
-- Fields (see storage/keys.py Field): clears st, en, x, r, w, rc, rn; writes s, e, c.
-- A key of the wrong type is refused with WRONGTYPE before anything is written.
-- Returns 'ok', 'absent' (not in this registry) or 'expired' (its record is gone).
--#include guard
--#include queueing
refuse_unless(KEYS[1], 'zset')
refuse_unless(KEYS[2], 'hash')
refuse_unless(KEYS[3], 'list')
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 'absent'
end
if tonumber(score) <= tonumber(ARGV[2]) or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'expired'
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], 'st', 'en', 'x', 'r', 'w', 'rc', 'rn')
requeued(KEYS[2], string.format('%.0f', tonumber(ARGV[2]) * 1000))
redis.call('PERSIST', KEYS[2])
redis.call('DEL', KEYS[5])
push(KEYS[3], KEYS[4], ARGV[1], false)
return 'ok'
