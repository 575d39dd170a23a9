-- Shared (include guard first): verdicts on leases, and holding them after a stall.
-- A worker that could not renew its leases for more than half a lease (Redis frozen or
-- unreachable, the machine suspended, the process paused) reports that stall. Every other
-- live worker was most likely cut off too and could not renew its own leases meanwhile,
-- so leases that ran out after the stall began are not judged (expired jobs, dead workers)
-- until `grace` seconds after it ended: long enough for every live worker to heartbeat
-- once. Leases that ran out before the stall are judged as usual. The hold is kept in the
-- maintenance hash: fields hf (held from) and hu (held until), Unix seconds.

-- The current hold: from, until (nil, nil when none is in force at `now`).
local function current_hold(state, now)
  local hold = redis.call('HMGET', state, 'hf', 'hu')
  local from, to = unix_time(hold[1], nil), unix_time(hold[2], nil)
  if from and to and to > now then
    return from, to
  end
  return nil, nil
end

-- Record a stall [from, to] reported by a worker whose lease is `grace` seconds (ARGV text).
local function hold_verdicts(state, now, from, to, grace)
  repair(state, 'hash')
  from, to, grace = unix_time(from, nil), unix_time(to, nil), number(grace, 0, 0, 86400)
  if not from or not to or to + grace <= now then
    return
  end
  local held_from, held_until = current_hold(state, now)
  local hold_until = to + grace
  if held_from then
    from, hold_until = math.min(from, held_from), math.max(held_until, hold_until)
  end
  redis.call('HSET', state, 'hf', string.format('%.3f', from), 'hu', string.format('%.3f', hold_until))
end

-- The time up to which leases may be judged: `now`, or during a hold the time it began.
local function verdict_time(state, now)
  repair(state, 'hash')
  local from = current_hold(state, now)
  if from and from < now then
    return from
  end
  return now
end
