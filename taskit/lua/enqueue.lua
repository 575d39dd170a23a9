-- Write a new job and make it runnable, in one step.
-- KEYS: 1 job hash, 2 packed-job bucket, 3 queue list, 4 wake list, 5 scheduled zset,
--       6 queues set
-- ARGV: 1 job id, 2 queue name, 3 ttl seconds ('' = none), 4 at_front ('1'/'0'),
--       5 run-at time ('' = run now), 6.. field, value pairs for the hash
-- A data key of the wrong type (job, bucket, queue, schedule) is refused with WRONGTYPE before
-- anything is written; a wake list or queue set of the wrong type is repaired.
-- Returns 1 written; 0 when a job with this id already exists (nothing is written); 2 when
-- the job that exists is this very one (same function, arguments and enqueue time: a
-- retry of this call whose first reply was lost).
--#include guard
--#include queueing
--#include packed
--#include add_job
check_new_job(KEYS[1], KEYS[2], KEYS[3], KEYS[5], ARGV[3], ARGV[5])
if job_exists(KEYS[1], KEYS[2], ARGV[1]) then
  return is_this_job(KEYS[1], KEYS[2], ARGV[1], 6) and 2 or 0
end
add_job(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], 6)
return 1
