-- Record what happened to a batch of claimed jobs, fenced by each claim's token.
-- A job whose claim this worker no longer holds (its lease expired and the job was
-- recovered, or it was deleted) is left untouched: a newer attempt owns it.
-- KEYS: per tag of the batch: in-flight list of the worker in that tag, state hash, expiry
--       zset; per queue of the batch: queue list, wake list, started, finished, failed,
--       canceled and scheduled zsets; per job: bucket, own hash, done list. Then the stats
--       keys, three per queue (lib/stats.lua). (Keys shared by the jobs of a batch are
--       given once: a job names its queue by number.)
-- ARGV: 1 now (Unix seconds), 2 worker name, 3 failure ttl of a job failed as corrupt,
--       4 how many tags, 5 how many queues, 6 how many kinds, then per queue: its name,
--       the number of its tag (1-based); then per kind (what the jobs of a batch mostly
--       share, given once): outcome (followed by ' refused' when the worker refused to run
--       it: for the stats), keep seconds, run-at, the number of its queue (1-based), task
--       name (for the stats; '' = read it from the record); then per job: id, token, the
--       number of its kind (1-based), its run time in µs ('' = unknown), payload
--   outcome finished : payload = packed result ('' = do not keep)   -> finished registry
--           failed   : payload = traceback text                      -> failed registry
--           canceled : payload = why (traceback text); stopped on request -> canceled registry
--           retry    : payload = traceback text, back on the queue now
--           scheduled: payload = traceback text, retried at run-at     -> scheduled registry
--           released : never ran (prefetched); back to the front of the queue
--           interrupted: stopped mid-run by a cold shutdown; back to the front
--   keep: 0 delete at once, -1 keep forever, n keep n seconds (more than 100 years: forever)
-- An ended job leaves its bucket and state entry for its own hash (lib/records.lua).
-- Fields (see storage/keys.py Field): reads n, s, wt, rn, w (state), tl, f, e, c (record,
-- only for a job that goes back to its queue); writes s, en, r, x, rn, n, c, e
-- (and lib/failing.lua's for a job failed instead).
-- The script never raises on data (lib/guard.lua), so one bad job costs only itself: a job
-- whose record cannot be read, or whose outcome cannot be written where it goes (that
-- registry or queue holds another type), is failed, with the reason, instead.
-- Returns per job: 1 recorded (now, or by an earlier try of the same call), 0 claim lost,
-- 2 failed instead, as just said (its exc_info says why).
--#include guard
--#include records
--#include signal_end
--#include queueing
--#include failing
--#include stats
local now = tonumber(ARGV[1])
local now_ms = string.format('%.0f', now * 1000)
local worker, failure_ttl = ARGV[2], seconds(ARGV[3], 31536000)
local out = {}
-- registry updates are gathered per key and sent as one ZREM / ZADD each
local removals, additions = {}, {}
local function list_of(into, key)
  local list = into[key]
  if not list then list = {}; into[key] = list end
  return list
end
local function gather(into, key, first, second)
  local list = list_of(into, key)
  list[#list + 1] = first
  if second ~= nil then list[#list + 1] = second end
end
-- outcomes written to the target registry; any other puts the job back on its queue
local ends = {finished = true, failed = true, canceled = true, scheduled = true}
local short_ends = {finished = true, failed = true, canceled = true}  -- (they end the job)
local checked = {}  -- key -> {fits its kind, its type}, for keys shared by the jobs of a batch
local function fits_once(key, kind)
  local known = checked[key]
  if known == nil then
    known = {fits(key, kind)}
    checked[key] = known
  end
  return known[1], known[2]
end

local tags, queues, k = {}, {}, 1
for t = 1, tonumber(ARGV[4]) do
  tags[t] = {inflight = KEYS[k], state = KEYS[k + 1], expiry = KEYS[k + 2]}
  k = k + 3
end
local a = 7
for q = 1, tonumber(ARGV[5]) do
  queues[q] = {name = ARGV[a], tag = tags[tonumber(ARGV[a + 1])], queue = KEYS[k], wake = KEYS[k + 1],
               started = KEYS[k + 2], finished = KEYS[k + 3], failed = KEYS[k + 4], canceled = KEYS[k + 5],
               scheduled = KEYS[k + 6]}
  k, a = k + 7, a + 2
end
-- a kind's outcome, target registry (unused for the outcomes that requeue), keep, run-at,
-- queue, task and whether the job was refused
-- (kinds are found by the text of a job's argument: tonumber() per job costs a strtod)
local kinds, kind_of = {}, {}
for n = 1, tonumber(ARGV[6]) do
  local outcome, refused = outcome_and_run_time(ARGV[a])
  local place = queues[tonumber(ARGV[a + 3])]
  local target = place.started
  if outcome == 'finished' then target = place.finished
  elseif outcome == 'failed' then target = place.failed
  elseif outcome == 'canceled' then target = place.canceled
  elseif outcome == 'scheduled' then target = place.scheduled
  end
  local keep = seconds(ARGV[a + 1], failure_ttl)
  -- short: its jobs may take the short way (ended_in_short); score: their registry's (their
  -- expiry time, made text once as redis.call would: '%.17g'); runs: the run times of its
  -- jobs recorded in short, counted together at the end (count_outcomes)
  kinds[n] = {outcome = outcome, target = target, keep = keep, run_at = ARGV[a + 2],
              place = place, task = ARGV[a + 4], refused = refused == 'refused',
              short = short_ends[outcome] and fits_once(target, 'zset'),
              score = keep < 0 and '+inf' or string.format('%.17g', now + keep), runs = {}}
  local kind = kinds[n]
  if kind.short then
    -- where the short way gathers its jobs' registry updates (found once, not per job)
    kind.removed = fits_once(place.started, 'zset') and list_of(removals, place.started)
    kind.added = keep ~= 0 and list_of(additions, target)
  end
  kind_of[tostring(n)] = kind
  a = a + 5
end
local first_job_arg = a
stats_keys_from(k + 3 * (#ARGV - first_job_arg + 1) / 5)

-- Whether this caller may run HLEN on `key`: an ACL user made before HLEN was granted may
-- not. Asked first (redis.acl_check_cmd, Redis 7), not tried, since Redis logs every
-- denial in ACL LOG; pcall where it cannot be asked.
local function may_hlen(key)
  return not redis.acl_check_cmd or redis.acl_check_cmd('HLEN', key)
end

-- The state entries of the batch's `ids` in `state` into `entries` (id -> entry, false if
-- none; it holds false for each id already); returns the size of the state hash when it
-- was asked (else nil). A state hash that holds little more than them (a worker alone on
-- its queue) is read whole when the batch has one tag (`whole`): in a small hash (a
-- listpack) HMGET looks each field up from its start, n * n over a batch.
local function read_entries(state, ids, entries, whole)
  local size = #ids > 1 and may_hlen(state) and redis.pcall('HLEN', state)
  if type(size) ~= 'number' then size = nil end
  if whole and size and size <= 2 * #ids then
    local all = redis.call('HGETALL', state)
    for i = 1, #all, 2 do
      if entries[all[i]] == false then entries[all[i]] = all[i + 1] end
    end
    return size
  end
  for first = 1, #ids, 1000 do
    local last = math.min(first + 999, #ids)
    local got = redis.call('HMGET', state, unpack(ids, first, last))
    for i = first, last do entries[ids[i]] = got[i - first + 1] or false end
  end
  return size
end

-- Whether the in-flight list's head, `head`, holds exactly `ids`: in their order (the
-- usual case: jobs end in the order they were claimed), or in any.
local function holds_exactly(head, ids)
  if #head ~= #ids then return false end
  local i = 1
  while i <= #ids and head[i] == ids[i] do i = i + 1 end
  if i > #ids then return true end
  local wanted = {}
  for _, id in ipairs(ids) do wanted[id] = true end
  for _, id in ipairs(head) do
    if not wanted[id] then return false end
    wanted[id] = nil
  end
  return true
end

-- Per tag, what can be done once for the batch rather than once a job (a batch whose ids
-- are all distinct; with an id twice, each job reads and writes as it comes):
-- * the in-flight list: when its head holds exactly the batch's ids of the tag (the usual
--   case: jobs end in the order they were claimed), one LTRIM releases them all;
-- * the state entries: read at once (`read_entries`), and those of ended jobs deleted in
--   one HDEL, or with the hash when they were all it held.
local batched, entries = true, {}  -- per job id: its state entry (false: none; first, false for all)
for a = first_job_arg, #ARGV, 5 do
  if entries[ARGV[a]] ~= nil then batched = false; break end
  entries[ARGV[a]] = false
end
if batched then
  for t, tag in ipairs(tags) do
    tag.ids, tag.ended = {}, {}
    if not fits_once(tag.state, 'hash') then redis.call('DEL', tag.state); checked[tag.state] = {true} end
  end
  for a = first_job_arg, #ARGV, 5 do
    local ids = (kind_of[ARGV[a + 2]] or kinds[tonumber(ARGV[a + 2])]).place.tag.ids
    ids[#ids + 1] = ARGV[a]
  end
  for _, tag in ipairs(tags) do
    local ids = tag.ids
    -- (its size, while only the short way's jobs are recorded: they leave their entries for
    -- the end, where the size tells whether the hash is drained)
    tag.size = read_entries(tag.state, ids, entries, #tags == 1)
    if #ids > 0 and fits_once(tag.inflight, 'list') and
        holds_exactly(redis.call('LRANGE', tag.inflight, 0, #ids - 1), ids) then
      redis.call('LTRIM', tag.inflight, #ids, -1)
      tag.held = true
    end
  end
end

-- Count a recorded job in the stats (its task read from its record when the worker did not
-- name it).
local function count(kind, blob, outcome, run_time)
  local task = kind.task
  if task == '' and stat_kinds[outcome] then task = (unpacked(blob) or {}).f or '' end
  count_outcome(kind.place.queue, task ~= '' and task, outcome, run_time)
end

-- Record one job, whatever its case (`ended_in_short` takes the usual one first).
local function record(id, token, kind, payload, run_time, bucket, job, done)
  local outcome, place, target, keep = kind.outcome, kind.place, kind.target, kind.keep
  local run_at, queue_name = kind.run_at, place.name
  local inflight, state, expiry = place.tag.inflight, place.tag.state, place.tag.expiry
  place.tag.size = nil  -- (the long way may write the state hash)
  local queue, wake, started, failed = place.queue, place.wake, place.started, place.failed

  -- with its in-flight list overwritten, a worker's hold is judged by the record alone
  local held = nil
  if place.tag.held then held = 1
  elseif fits_once(inflight, 'list') then held = redis.call('LREM', inflight, 1, id)
  end
  if not fits_once(state, 'hash') then redis.call('DEL', state); checked[state] = {true} end
  -- what a claim wrote is in the state entry: the record is copied, not unpacked, unless
  -- the job goes back to its queue. One that cannot be read (its bucket overwritten by
  -- another type, or its entry by what is not a record) is failed as corrupt, if this
  -- worker holds the job.
  local blob, problem = redis.pcall('HGET', bucket, id), nil
  if type(blob) == 'table' and blob.err then
    local _, found = fits(bucket, 'hash')
    blob, problem = nil, 'its record (' .. bucket .. ') was overwritten by a ' .. (found or '?')
  elseif blob and not looks_packed(blob) then
    problem = 'its record in ' .. bucket .. ' was overwritten by unreadable data'
  end
  local entry
  if batched then entry = entries[id] else entry = redis.call('HGET', state, id) end
  local f, own = unpacked(entry), false
  if not f and key_type(job) == 'hash' then
    local g = redis.call('HMGET', job, 'n', 's', 'w')
    f, own = {n = g[1], s = g[2], w = g[3]}, true
  end
  f = f or {}
  if held == nil then held = f.w == worker and 1 or 0 end

  if own or held == 0 or f.n ~= token or f.s ~= 'started' then
    -- a retried round trip finds its own record already written: that counts as recorded
    local already = held == 0 and f.n == token and f.w == worker and f.s ~= 'started' and f.s ~= nil
    out[#out + 1] = already and 1 or 0
  else
    if fits_once(started, 'zset') then gather(removals, started, id) end
    local destination, form = target, 'zset'
    if not ends[outcome] then destination, form = queue, 'list' end
    local usable, found = fits_once(destination, form)
    if problem and outcome ~= 'failed' then
      -- it ends here, visibly (a failure is recorded as such: its worker could not read it
      -- either, and says why)
      f.f, f.q = '', queue_name
      fail_job(job, bucket, state, expiry, id, nil, f, failed, done, now, failure_ttl,
        'corrupt: ' .. problem .. ' while it ran; this failed record replaces it')
      out[#out + 1] = 2
    elseif not usable then
      if outcome == 'finished' and payload ~= '' then f.r = payload end
      local reason = 'corrupt: could not be recorded as ' .. outcome .. ': ' .. wrong_type(destination, form, found)
      if outcome ~= 'finished' and outcome ~= 'released' and payload ~= '' then
        reason = reason .. '\n' .. payload
      end
      fail_job(job, bucket, state, expiry, id, blob, f, failed, done, now, failure_ttl, reason)
      out[#out + 1] = 2
    elseif outcome == 'finished' or outcome == 'failed' or outcome == 'canceled' then
      f.s, f.en, f.al = outcome, now_ms, nil  -- ('al' matters only while it runs: lib/recover.lua)
      if outcome == 'finished' then
        f.x = nil  -- an earlier attempt's traceback
        if payload ~= '' then f.r = payload end
      else
        f.x = payload
      end
      signal_end(f, done, outcome)  -- before a keep of 0 deletes the job
      write_ended(job, bucket, state, expiry, id, blob, f, keep, batched and place.tag.ended or nil)
      if keep < 0 then
        gather(additions, target, '+inf', id)
      elseif keep > 0 then
        gather(additions, target, now + keep, id)
      end
      out[#out + 1] = 1
    elseif outcome == 'scheduled' then
      incr(f, 'rn', 1)
      f.s, f.x = 'scheduled', payload
      write_state(state, id, f)
      gather(additions, target, number(run_at, now, -math.huge, math.huge), id)
      out[#out + 1] = 1
    else
      local record = unpacked(blob) or {}
      if outcome == 'released' then
        incr(f, 'n', -1)
        -- it never ran: its ttl (dropped when it was claimed) applies again, from now
        local ttl = seconds(record.tl, -1)
        if ttl > 0 then redis.call('ZADD', expiry, now + ttl, id) end
      elseif outcome == 'retry' then
        incr(f, 'rn', 1)
        f.x = payload
      end
      requeued(f, merged(record, f), now_ms)
      write_state(state, id, f)
      push(queue, wake, id, outcome ~= 'retry')
      out[#out + 1] = 1
    end
    count(kind, blob, out[#out] == 2 and 'failed' or outcome, run_time)
  end
end

-- The state entries of a batch, unpacked once per text (a claim writes the same text for
-- every job it claims fresh, so a batch mostly has one): its fields, read only, and the
-- flat list of those an ended job keeps in its own hash (all but its status, 'al', an
-- earlier traceback and the end's own fields, which ending it writes).
local views = {}
local REPLACED_AT_END = {s = true, al = true, x = true, en = true, r = true, p = true}
local function view_of(entry)
  local view = views[entry]
  if view == nil then
    local fields, kept, n = unpacked(entry) or {}, {}, 0
    for name, value in pairs(fields) do
      if not REPLACED_AT_END[name] then kept[n + 1], kept[n + 2], n = name, value, n + 2 end
    end
    view = {fields = fields, kept = kept, count = n / 2}
    views[entry] = view
  end
  return view
end

-- The usual case, in short (the same writes as `record`, with no map made per job): a job
-- of a batch whose in-flight ids were released at once, its claim's state entry in place,
-- its record readable, ending finished, failed or canceled into a registry that fits.
-- Returns false, having written nothing, for any other case.
local function ended_in_short(id, token, kind, payload, run_time, bucket, job, done)
  local place = kind.place
  local tag, entry = place.tag, entries[id]
  if not (tag.held and kind.short and entry) then return false end
  local view = view_of(entry)
  local fields = view.fields
  if fields.n ~= token or fields.s ~= 'started' or fields.r then return false end
  local blob = redis.pcall('HGET', bucket, id)
  -- (none, an error reply or not a record; a text's .err is nil, and asking costs less than a type())
  if not blob or blob.err or not looks_packed(blob) then return false end
  local outcome, keep = kind.outcome, kind.keep
  local removed = kind.removed
  if removed then removed[#removed + 1] = id end
  if fields.wt then signal(done, outcome) end  -- before a keep of 0 deletes the job
  redis.pcall('HDEL', bucket, id)  -- (a bucket that is not a hash holds no job)
  tag.ended[#tag.ended + 1] = id
  if keep == 0 then
    redis.call('DEL', job)
  else
    -- ('al' matters only while it runs: lib/recover.lua; a finished job drops an earlier
    -- attempt's traceback)
    if outcome ~= 'finished' then
      write_own(job, keep, view.count + 4, 'p', blob, 's', outcome, 'en', now_ms, 'x', payload, unpack(view.kept))
    elseif payload ~= '' then
      write_own(job, keep, view.count + 4, 'p', blob, 's', outcome, 'en', now_ms, 'r', payload, unpack(view.kept))
    else
      write_own(job, keep, view.count + 3, 'p', blob, 's', outcome, 'en', now_ms, unpack(view.kept))
    end
    local added = kind.added
    local n = #added
    added[n + 1], added[n + 2] = kind.score, id
  end
  out[#out + 1] = 1
  if kind.task ~= '' then  -- counted with its kind's, at the end
    local runs = kind.runs
    runs[#runs + 1] = run_time
  else
    count(kind, blob, outcome, run_time)
  end
  return true
end

for a = first_job_arg, #ARGV, 5 do
  local id, token, payload, run_time = ARGV[a], ARGV[a + 1], ARGV[a + 4], ARGV[a + 3]
  local kind = kind_of[ARGV[a + 2]] or kinds[tonumber(ARGV[a + 2])]
  if kind.refused then run_time = 'refused' end
  local bucket, job, done = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
  if not (batched and ended_in_short(id, token, kind, payload, run_time, bucket, job, done)) then
    record(id, token, kind, payload, run_time, bucket, job, done)
  end
end
if batched then
  -- (a state hash left with only the entries of the batch's ended jobs, as when a worker
  -- alone drains a queue, is deleted whole: an HDEL of n fields from a small hash, which
  -- Redis keeps as a list, costs n * n. An ACL user made before HLEN was granted gets the
  -- HDEL: `may_hlen`.)
  for _, tag in ipairs(tags) do
    local size = tag.size
    if size == nil and #tag.ended > 0 and may_hlen(tag.state) then size = redis.pcall('HLEN', tag.state) end
    if #tag.ended > 0 and size == #tag.ended then
      redis.call('DEL', tag.state)
    else
      call_chunked('HDEL', tag.state, tag.ended)
    end
  end
end
for key, ids in pairs(removals) do
  call_chunked('ZREM', key, in_byte_order(ids))  -- (in the order a claim's leases are kept)
end
for key, pairs_ in pairs(additions) do
  call_chunked('ZADD', key, pairs_)
end
for _, kind in ipairs(kinds) do
  count_outcomes(kind.place.queue, kind.task, kind.outcome, kind.runs)
end
write_stats(now)
return out
