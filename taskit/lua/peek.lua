-- Read jobs to show them, leaving out every value longer than a bound: a page or a command
-- that shows a job must not load its 50 MB argument (storage/store.py `Store.peek`). Reads
-- only. The lengths come from HSTRLEN, so a value left out is never read, not even here.
-- KEYS: per job: job hash, packed-job bucket
-- ARGV: 1 bound (bytes), 2 n: how many field names follow, 3..2+n the field names to read
--       (storage/keys.py Field), then one id per job
-- Returns per job:
--   0                                  no such job
--   {'wrongtype', key, type}           its hash or its bucket holds another type
--   {'hash', {field, value, ...}, {field, length, ...}}
--                                      its fields up to the bound, and the length of each
--                                      field over it
--   {'packed', entry}                  its packed entry (lib/packed.lua), at most the bound long
--   {'packed', length}                 a longer packed entry, not read (enqueue packs only
--                                      small jobs: lib/add_job.lua; this one was written so)
--#include guard
local bound = tonumber(ARGV[1])
local names = {}
for i = 3, 2 + tonumber(ARGV[2]) do
  names[#names + 1] = ARGV[i]
end
local out = {}
local first_id = 3 + #names
for j = 0, #KEYS / 2 - 1 do
  local job, bucket, id = KEYS[2 * j + 1], KEYS[2 * j + 2], ARGV[first_id + j]
  local job_ok, job_found = fits(job, 'hash')
  local bucket_ok, bucket_found = true, nil
  if job_ok and redis.call('EXISTS', job) == 0 then bucket_ok, bucket_found = fits(bucket, 'hash') end
  if not job_ok then
    out[#out + 1] = {'wrongtype', job, job_found}
  elseif redis.call('EXISTS', job) == 1 then
    local fields, lengths = {}, {}
    for _, name in ipairs(names) do
      local length = redis.call('HSTRLEN', job, name)
      if length > bound then
        lengths[#lengths + 1] = name
        lengths[#lengths + 1] = length
      elseif length > 0 or redis.call('HEXISTS', job, name) == 1 then
        fields[#fields + 1] = name
        fields[#fields + 1] = redis.call('HGET', job, name)
      end
    end
    out[#out + 1] = {'hash', fields, lengths}
  elseif not bucket_ok then
    out[#out + 1] = {'wrongtype', bucket, bucket_found}
  else
    local length = redis.call('HSTRLEN', bucket, id)
    if length > bound then
      out[#out + 1] = {'packed', length}
    elseif length > 0 then
      out[#out + 1] = {'packed', redis.call('HGET', bucket, id)}
    else
      out[#out + 1] = 0
    end
  end
end
return out
