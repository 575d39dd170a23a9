-- Shared (pasted in where a script says --#include signal_end): wake whoever waits in
-- job.wait() for this job to end. Only jobs someone waits for (wait.lua set 'wt')
-- get a done list, and it lives one minute.
local function signal_end(job, done, outcome)
  if redis.call('HEXISTS', job, 'wt') == 1 then
    redis.call('RPUSH', done, outcome)
    redis.call('EXPIRE', done, 60)
  end
end
