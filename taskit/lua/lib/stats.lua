-- Shared by finish.lua (include it, split each outcome with outcome_and_run_time, call
-- count_outcome per recorded job and write_stats once at the end): the counters behind the
-- dashboard's charts and the Prometheus metrics.
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
-- A job the worker refused (it names a function the worker does not know or may not run, or
-- its data is unreadable: nothing ran) rides 'failed refused' and is counted under the one
-- task name REFUSED_TASK (storage/store.py), never under the name it carries: anyone who can
-- enqueue could otherwise add counters, and metrics series, for every name they make up.
local REFUSED_TASK = '(refused)'
local STAT_BOUNDS = {
  {5000, '0.005'}, {10000, '0.01'}, {25000, '0.025'}, {50000, '0.05'}, {100000, '0.1'},
  {250000, '0.25'}, {500000, '0.5'}, {1000000, '1'}, {2500000, '2.5'}, {5000000, '5'},
  {10000000, '10'}, {30000000, '30'}, {60000000, '60'}, {300000000, '300'},
}
local stat_keys, stat_queues = {}, {}

-- An outcome argument may carry a second word: 'failed refused' (finish.lua's kinds), or a
-- run time in µs ('finished 1234').
local function outcome_and_run_time(arg)
  local space = string.find(arg, ' ', 1, true)
  if not space then return arg, '' end
  return string.sub(arg, 1, space - 1), string.sub(arg, space + 1)
end

-- Learn the stats keys from KEYS[first..]: triples of queue list, hour hash, totals hash.
local function stats_keys_from(first)
  for i = first, #KEYS, 3 do
    stat_keys[KEYS[i]] = {KEYS[i + 1], KEYS[i + 2]}
  end
end

-- Count recorded outcomes (finished, failed, retry or scheduled) of `task` (the jobs' f
-- field, false if they have none), one per item of `runs`: how long each ran, in
-- microseconds ('' = unknown, 'refused' = refused before running: counted as REFUSED_TASK;
-- all of `runs` or none). Only numbers are added here; field names are built once per
-- batch, in write_stats. (A caller gathers the jobs that share a task and an outcome: the
-- lookups are made once for them.)
-- (keys in brackets: names of outcomes, not fields: tests/test_script_keys.py reads fields by name)
local stat_kinds = {['finished'] = 'd', ['failed'] = 'f', ['retry'] = 'r', ['scheduled'] = 'r'}  -- others: not counted
local function count_outcomes(queue, task, outcome, runs)
  local kind, n = stat_kinds[outcome], #runs
  if runs[1] == 'refused' then task = REFUSED_TASK end
  if not kind or not task or not stat_keys[queue] or n == 0 then return end
  local per_queue = stat_queues[queue]
  if not per_queue then per_queue = {d = 0, f = 0, r = 0, tasks = {}}; stat_queues[queue] = per_queue end
  local counts = per_queue.tasks[task]
  if not counts then counts = {d = 0, f = 0, r = 0, us = 0, runs = {}}; per_queue.tasks[task] = counts end
  per_queue[kind] = per_queue[kind] + n
  counts[kind] = counts[kind] + n
  local bins, total = counts.runs, 0
  for r = 1, n do
    local us = tonumber(runs[r])
    if us then
      local bin = #STAT_BOUNDS + 1
      for i = 1, #STAT_BOUNDS do
        if us <= STAT_BOUNDS[i][1] then bin = i; break end
      end
      total = total + math.floor(us)
      bins[bin] = (bins[bin] or 0) + 1
    end
  end
  counts.us = counts.us + total
end

-- count_outcomes for one job, which ran `micros`.
local function count_outcome(queue, task, outcome, micros)
  count_outcomes(queue, task, outcome, {micros})
end

-- Write every counter once; hour hashes expire 26 hours after their hour began.
local function write_stats(now)
  local minute = string.format('%.0f', math.floor(now / 60))
  local expire_at = (math.floor(now / 3600) + 26) * 3600
  for queue, per_queue in pairs(stat_queues) do
    local hour, totals = stat_keys[queue][1], stat_keys[queue][2]
    for _, kind in ipairs({'d', 'f', 'r'}) do
      if per_queue[kind] > 0 then redis.pcall('HINCRBY', hour, kind .. ':' .. minute, per_queue[kind]) end
    end
    redis.pcall('EXPIREAT', hour, expire_at)
    for task, counts in pairs(per_queue.tasks) do
      for _, kind in ipairs({'d', 'f', 'r'}) do
        if counts[kind] > 0 then redis.pcall('HINCRBY', totals, kind .. ':' .. task, counts[kind]) end
      end
      if counts.us > 0 then redis.pcall('HINCRBY', totals, 'us:' .. task, string.format('%.0f', counts.us)) end
      for bin, n in pairs(counts.runs) do
        local bound = STAT_BOUNDS[bin] and STAT_BOUNDS[bin][2] or '+Inf'
        redis.pcall('HINCRBY', totals, 'h' .. bound .. ':' .. task, n)
      end
    end
  end
end
