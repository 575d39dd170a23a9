-- Shared by finish.lua (include it, call count_outcome per recorded job and write_stats
-- once at the end): the counters behind the dashboard's charts and the Prometheus metrics.
-- Counts are summed in Lua while a batch is recorded, then each counter is written once,
-- so a batch of 64 jobs of one task costs about five more commands, not 64.
-- Stats keys come after every job's keys, three per queue of the batch (see
-- storage/keys.py `stats` and `totals`):
--   queue list (only to match a job to its queue: not touched), hour hash, totals hash
-- hour hash (expires a day after its hour): d:<minute>, f:<minute>, r:<minute> = jobs
--   finished, failed, retried in that Unix minute
-- totals hash (kept): d:<task>, f:<task>, r:<task> as above since the start; us:<task> run
--   time in microseconds; h<bound>:<task> runs of at most <bound> seconds and more than
--   the bound before it (h+Inf: the rest)
-- Writes use pcall: a damaged stats key must never stop outcomes from being recorded.
local STAT_BOUNDS = {
  {5000, '0.005'}, {10000, '0.01'}, {25000, '0.025'}, {50000, '0.05'}, {100000, '0.1'},
  {250000, '0.25'}, {500000, '0.5'}, {1000000, '1'}, {2500000, '2.5'}, {5000000, '5'},
  {10000000, '10'}, {30000000, '30'}, {60000000, '60'}, {300000000, '300'},
}
local stat_counts, stat_keys = {}, {}

local function stat_add(key, field, n)
  local fields = stat_counts[key]
  if not fields then fields = {}; stat_counts[key] = fields end
  fields[field] = (fields[field] or 0) + n
end

-- Learn the stats keys from KEYS[first..]: triples of queue list, hour hash, totals hash.
local function stats_keys_from(first)
  for i = first, #KEYS, 3 do
    stat_keys[KEYS[i]] = {KEYS[i + 1], KEYS[i + 2]}
  end
end

-- Count one recorded outcome (finished, failed, retry or scheduled) of `task`, which ran
-- `micros` microseconds ('' = it never ran: refused before running).
local function count_outcome(queue, task, outcome, micros, minute)
  local pair = stat_keys[queue]
  if not pair or task == '' then return end
  local kind = (outcome == 'finished' and 'd') or (outcome == 'failed' and 'f') or 'r'
  stat_add(pair[1], kind .. ':' .. minute, 1)
  stat_add(pair[2], kind .. ':' .. task, 1)
  local us = tonumber(micros)
  if us then
    local bucket = '+Inf'
    for _, bound in ipairs(STAT_BOUNDS) do
      if us <= bound[1] then bucket = bound[2]; break end
    end
    stat_add(pair[2], 'us:' .. task, math.floor(us))
    stat_add(pair[2], 'h' .. bucket .. ':' .. task, 1)
  end
end

-- Write every counter once; hour hashes expire 26 hours after their hour began.
local function write_stats(now)
  local expire_at = (math.floor(now / 3600) + 26) * 3600
  for key, fields in pairs(stat_counts) do
    for field, n in pairs(fields) do
      redis.pcall('HINCRBY', key, field, string.format('%.0f', n))
    end
  end
  for _, pair in pairs(stat_keys) do
    if stat_counts[pair[1]] then redis.pcall('EXPIREAT', pair[1], expire_at) end
  end
end
