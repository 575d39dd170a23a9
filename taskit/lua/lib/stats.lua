-- Shared by finish.lua: the counters behind the dashboard's charts and the Prometheus
-- metrics (storage/store.py `Store._finish` builds what this reads).
-- The worker sums its batch's outcomes by group (queue, outcome kind, task, run-time
-- bucket) and sends the sums once, as the script's last ARGV: a msgpack array of
--   {queue number (0-based), kind ('d' finished, 'f' failed, 'r' retried), task,
--    bucket bound ('' = no run time), jobs, run time in microseconds}
-- Each job's ARGV names its group (1-based; '' = not counted) and run time. A job whose
-- record is not applied (claim lost) is taken back out of its group's sums, so only the
-- outcomes really recorded count, and a recorded job costs nothing more here.
-- Stats keys come after every job's keys, two per queue number (see storage/keys.py):
-- hour hash (expires a day after its hour): d:<minute>, f:<minute>, r:<minute> = jobs
--   finished, failed, retried in that Unix minute
-- totals hash (kept): d:<task>, f:<task>, r:<task> as above since the start; us:<task> run
--   time in microseconds; h<bound>:<task> runs of at most <bound> seconds and more than
--   the bound before it (h+Inf: the rest)
-- Writes use pcall: a damaged stats key must never stop outcomes from being recorded.
local stat_groups, stat_first_key, stat_missing = {}, 0, {}

local function stats_from(blob, first_key)
  local ok, groups = pcall(cmsgpack.unpack, blob)
  if ok and type(groups) == 'table' then stat_groups = groups end
  stat_first_key = first_key
end

-- A job whose record was not applied: take it out of its group.
local function stats_not_recorded(group, micros)
  local g = tonumber(group)
  if not g then return end
  local missing = stat_missing[g] or {0, 0}
  missing[1] = missing[1] + 1
  missing[2] = missing[2] + (tonumber(micros) or 0)
  stat_missing[g] = missing
end

-- Write each counter once; hour hashes expire 26 hours after their hour began.
local function write_stats(now)
  local minute = string.format('%.0f', math.floor(now / 60))
  local expire_at = (math.floor(now / 3600) + 26) * 3600
  local sums, hours = {}, {}  -- key -> field -> increment; the hour keys written
  local function add(key, field, n)
    if not key or n <= 0 then return end
    local fields = sums[key]
    if not fields then fields = {}; sums[key] = fields end
    fields[field] = (fields[field] or 0) + n
  end
  for g, group in ipairs(stat_groups) do
    local queue, kind, task, bound, jobs, micros = unpack(group)
    local missing = stat_missing[g] or {0, 0}
    jobs, micros = jobs - missing[1], micros - missing[2]
    local hour, totals = KEYS[stat_first_key + 2 * queue], KEYS[stat_first_key + 2 * queue + 1]
    add(hour, kind .. ':' .. minute, jobs)
    if hour and jobs > 0 then hours[hour] = true end
    add(totals, kind .. ':' .. task, jobs)
    if bound ~= '' and jobs > 0 then
      add(totals, 'h' .. bound .. ':' .. task, jobs)
      add(totals, 'us:' .. task, micros)
    end
  end
  for key, fields in pairs(sums) do
    for field, n in pairs(fields) do
      redis.pcall('HINCRBY', key, field, string.format('%.0f', n))
    end
    if hours[key] then redis.pcall('EXPIREAT', key, expire_at) end
  end
end
