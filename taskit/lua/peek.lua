-- Read jobs to show them, leaving out every value longer than a bound: a page or a command
-- that shows a job must not be sent its 50 MB argument (storage/store.py `Store.peek`).
-- Reads only. A field of an ended job's own hash is measured with HSTRLEN first and not
-- read when longer. A job's record (in a bucket, or in field 'p' of an ended job's hash)
-- and state entry are packed entries (lib/records.lua), which can only be read whole: they
-- are read and unpacked here, in Redis, and only values up to the bound are sent.
-- KEYS: per job: bucket, own hash, state hash, expiry zset of its tag (all in one slot on a
--       cluster: the caller groups jobs by tag there)
-- ARGV: 1 now, 2 bound (bytes), 3 n: how many field names follow, 4..3+n the field names to
--       read from an own hash (storage/keys.py Field), then one id per job
-- Returns per job:
--   0                               no such job (a queued job whose ttl ran out is none)
--   {'wrongtype', key, type}        its bucket, its own hash or its state hash holds another type
--   {'fields', {field, value, ...}, {field, length, ...}}
--                                   its fields up to the bound (its status among them), and
--                                   the length of each field over it; an entry that cannot
--                                   be unpacked is named 'packed entry' with its length
-- A waiting job costs two reads (its record, then its state entry), as a plain read would.
--#include guard
--#include records
local now, bound = tonumber(ARGV[1]), tonumber(ARGV[2])
local names = {}
for i = 4, 3 + tonumber(ARGV[3]) do
  names[#names + 1] = ARGV[i]
end
local PACKED_ENTRY = 'packed entry'  -- (storage/store.py PACKED_ENTRY)

-- Unpack a packed entry into `fields` (values over the bound go to `lengths` instead); an
-- entry that is not one is measured under PACKED_ENTRY.
local function spread(blob, fields, lengths)
  local ok, list = pcall(cmsgpack.unpack, blob)
  if not ok or type(list) ~= 'table' or #list % 2 == 1 then
    lengths[PACKED_ENTRY] = #blob
    return
  end
  for i = 1, #list, 2 do
    local name, value = list[i], list[i + 1]
    if type(value) == 'number' then value = string.format('%.0f', value) end
    if type(name) == 'string' and type(value) == 'string' then
      if #value > bound then
        lengths[name], fields[name] = #value, nil
      else
        fields[name], lengths[name] = value, nil
      end
    end
  end
end

-- A read's reply from a key that should be a hash, or nil and the type found there.
local function read_hash(key, reply)
  if type(reply) == 'table' and reply.err then
    local _, found = fits(key, 'hash')
    return nil, found or '?'
  end
  return reply
end

-- An ended job's fields from its own hash.
local function ended(job, blob)
  local fields, lengths = {}, {}
  if type(blob) == 'string' then spread(blob, fields, lengths) end
  for _, name in ipairs(names) do
    local length = redis.call('HSTRLEN', job, name)
    if length > bound then
      lengths[name], fields[name] = length, nil
    elseif length > 0 or redis.call('HEXISTS', job, name) == 1 then
      fields[name], lengths[name] = redis.call('HGET', job, name), nil
    end
  end
  return {'fields', flat(fields), flat(lengths)}
end

local out = {}
for j = 0, #KEYS / 4 - 1 do
  local bucket, job, state, expiry = KEYS[4 * j + 1], KEYS[4 * j + 2], KEYS[4 * j + 3], KEYS[4 * j + 4]
  local id = ARGV[4 + #names + j]
  local record_blob, spoiled = read_hash(bucket, redis.pcall('HGET', bucket, id))
  local own, found
  if not record_blob then  -- none: the job ended (its own hash), has only a state entry, or
    own, found = read_hash(job, redis.pcall('HMGET', job, 'p', 's'))  -- its bucket is spoiled
  end
  if spoiled and not (own and (own[1] or own[2])) then
    out[#out + 1] = {'wrongtype', bucket, spoiled}
  else
    if found then
      out[#out + 1] = {'wrongtype', job, found}
    elseif own and (own[1] or own[2]) then
      out[#out + 1] = ended(job, own[1])
    else
      local state_blob
      state_blob, found = read_hash(state, redis.pcall('HGET', state, id))
      if found then
        out[#out + 1] = {'wrongtype', state, found}
      elseif not record_blob and not state_blob then
        out[#out + 1] = 0
      else
        local fields, lengths = {}, {}
        if record_blob then spread(record_blob, fields, lengths) end
        if state_blob then spread(state_blob, fields, lengths) end
        if not fields.s then fields.s = 'queued' end
        local gone = false
        if fields.tl and (fields.s == 'queued' or fields.s == 'scheduled') then
          local until_ = redis.pcall('ZSCORE', expiry, id)
          gone = type(until_) == 'string' and tonumber(until_) <= now
        end
        out[#out + 1] = gone and 0 or {'fields', flat(fields), flat(lengths)}
      end
    end
  end
end
return out
