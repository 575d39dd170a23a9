-- Shared (include guard, records and signal_end first): end a job as failed, for good.
-- Fields (see storage/keys.py Field): writes s, en, x; a record made up for a job whose
-- own was lost also gets f (empty) and q.

-- The score of an entry of a registry of ended jobs: its expiry time.
local function expiry_score(now, keep)
  return keep < 0 and '+inf' or now + keep
end

-- Mark a job (its packed record `blob`, nil if none, and `fields`: a map of its state)
-- failed with `reason` as its exc_info, write it into its own hash `job`, kept `keep`
-- seconds (-1: forever), and list it in the failed registry, unless that registry is broken
-- too (then the record alone stays, and expires).
local function fail_job(job, bucket, state, expiry, id, blob, fields, failed, done, now, keep, reason)
  fields.s, fields.en, fields.x = 'failed', string.format('%.0f', now * 1000), reason
  signal_end(fields, done, 'failed')
  write_ended(job, bucket, state, expiry, id, blob, fields, keep)
  if fits(failed, 'zset') then
    redis.call('ZADD', failed, expiry_score(now, keep), id)
  end
end

-- The same, for a script that cannot name the job's own keys (the claim, the maintenance
-- step): the job is marked failed in its state entry, listed in the failed registry and
-- in the tag's settle zset, whose next visit (Store.settle, lua/settle.lua) moves it into
-- its own hash and signals its end.
local function fail_later(block, id, fields, failed, now, keep, reason)
  fields.s, fields.en, fields.x = 'failed', string.format('%.0f', now * 1000), reason
  write_state(block.state, id, fields)
  if fits(failed, 'zset') then
    redis.call('ZADD', failed, expiry_score(now, keep), id)
  end
  repair(block.settle, 'zset')  -- (an index of jobs to settle: the claim checks it only here)
  redis.call('ZADD', block.settle, keep, id)
end
