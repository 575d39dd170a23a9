-- Shared (include guard first): verdicts on leases, and holding them after a stall.
-- A worker that could not renew its leases for more than half a lease (Redis frozen or
-- unreachable, the machine suspended, the process paused) reports that stall. Every other
-- live worker was most likely cut off too and could not renew its own leases meanwhile,
-- so leases that ran out after the stall began are not judged (expired jobs, dead workers)
-- for `grace` seconds: long enough for every live worker to heartbeat once. Leases that
-- ran out before the stall are judged as usual. The hold is kept in the maintenance hash:
-- hf, the time the stall began (the workers' clock, as lease deadlines are), and hu, when
-- the hold ends by Redis's own clock (so a worker whose clock jumped cannot stretch it).

-- Redis's clock, in Unix seconds.
local function redis_time()
  local now = redis.call('TIME')
  return tonumber(now[1]) + tonumber(now[2]) / 1000000
end

-- The hold in force: the time its stall began, or nil. One that would last longer than any
-- grace is garbage, not a hold.
local MAX_GRACE = 86400
local function held_from(state)
  local hold = redis.call('HMGET', state, 'hf', 'hu')
  local from, to, now = unix_time(hold[1], nil), unix_time(hold[2], nil), redis_time()
  if from and to and to > now and to <= now + MAX_GRACE then
    return from
  end
  return nil
end

-- Record a stall that began at `began`, reported by a worker whose lease is `grace` seconds
-- (both ARGV text; a stall reported again while its hold lasts extends it).
local function hold_verdicts(state, began, grace)
  repair(state, 'hash')
  local from = unix_time(began, nil)
  if not from then
    return
  end
  local earlier = held_from(state)
  if earlier then
    from = math.min(from, earlier)
  end
  local to = redis_time() + number(grace, 0, 0, MAX_GRACE)
  redis.call('HSET', state, 'hf', string.format('%.3f', from), 'hu', string.format('%.3f', to))
end

-- The time up to which leases may be judged: `now`, or during a hold the time its stall began.
local function verdict_time(state, now)
  repair(state, 'hash')
  local from = held_from(state)
  if from and from < now then
    return from
  end
  return now
end
