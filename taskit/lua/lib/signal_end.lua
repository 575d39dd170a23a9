-- Shared (pasted in where a script says --#include signal_end; include guard first): wake
-- whoever waits in job.wait() for a job to end. A done list lives one minute.
local function signal(done, outcome)
  repair(done, 'list')
  redis.call('RPUSH', done, outcome)
  redis.call('EXPIRE', done, 60)
end

-- Signal the end of a job (fields: a map) only if someone waits for it (wait.lua set 'wt').
local function signal_end(fields, done, outcome)
  if fields.wt then
    signal(done, outcome)
  end
end
