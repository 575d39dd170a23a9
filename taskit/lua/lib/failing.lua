-- Shared (include guard and signal_end first): end a job as failed, for good.
-- Fields (see storage/keys.py Field): writes s, en, x; a record that replaces an overwritten
-- one also gets f (empty), q and what the caller adds (n, w).

-- Mark a job (a hash) failed with `reason` as its exc_info, keep it `keep` seconds (-1:
-- forever) and list it in the failed registry, unless that registry is broken too (then
-- the record alone stays, and expires).
local function fail_job(job, id, failed, done, now, keep, reason)
  redis.call('HSET', job, 's', 'failed', 'en', string.format('%.0f', now * 1000), 'x', reason)
  signal_end(job, done, 'failed')
  if keep < 0 then
    redis.call('PERSIST', job)
  else
    redis.call('EXPIRE', job, keep)
  end
  if fits(failed, 'zset') then
    redis.call('ZADD', failed, keep < 0 and '+inf' or now + keep, id)
  end
end

-- A job whose key holds something other than a hash (overwritten by hand or by another
-- program) can be neither read nor updated. It is replaced by a minimal failed record that
-- says so (`found`: what overwrote it; `during`: 'waited' or 'ran'), which an operator finds
-- in the failed registry, instead of stopping the script. `extra`: more field, value pairs
-- for the record; `done`: its done list, or nil when the script does not know it.
local function fail_overwritten(job, id, queue_name, failed, done, now, keep, found, during, extra)
  redis.call('DEL', job)
  redis.call('HSET', job, 'f', '', 'q', queue_name, unpack(extra))
  fail_job(job, id, failed, nil, now, keep,
    'corrupt: its record (' .. job .. ') was overwritten by a ' .. found .. ' while it ' .. during ..
    '; this failed record replaces it')
  if done then
    signal(done, 'failed')  -- whoever waits for it could not be recorded as waiting
  end
end
