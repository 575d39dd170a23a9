-- Write a new job and make it runnable, in one step.
-- KEYS (all in the job's tag): 1 bucket, 2 state hash, 3 own hash (an ended job with this
--       id), 4 queue list, 5 wake list, 6 scheduled zset, 7 the tag's queue set, 8 the
--       expiry zset (only for a job with a ttl)
-- ARGV: 1 job id, 2 queue name, 3 ttl seconds ('' = none), 4 at_front ('1'/'0'),
--       5 run-at time ('' = run now), 6 the packed record (lib/add_job.lua), 7 its enqueue
--       time (Unix milliseconds), 8 '1' when taskit made the id (lib/add_job.lua
--       exists_apart: its state entry is not looked up), else '0'
-- A data key of the wrong type is refused with WRONGTYPE and nothing stays written; a
-- wake list or queue set of the wrong type is repaired.
-- Returns 1 written; 0 when a job with this id already exists (nothing is written); 2 when
-- the job that exists is this very one (the same packed record: a retry of this call whose
-- first reply was lost); 11 written, and the queue was not in its tag's queue set (the
-- caller adds it to the global one). (One number: a reply the client reads fastest.)
--#include guard
--#include queueing
--#include add_job
local k, id, blob = 1, ARGV[1], ARGV[6]  -- (k: the job's keys start at KEYS[1])
check_numbers(ARGV[3], ARGV[5])
if exists_apart(k, id, ARGV[8] == '1') or not write_record(k, id, blob) then
  return is_this_job(k, id, blob) and 2 or 0
end
return 1 + 10 * add_job(k, id, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[7])
