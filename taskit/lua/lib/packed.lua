-- Shared (include guard first): queued jobs kept packed, one entry each in a bucket hash
-- (see storage/keys.py `packed`, whose arithmetic this must match: 1024 = keys.PACKED_BUCKETS).
local function packed_key(prefix, id)
  local bucket = 0
  for i = 1, #id do
    bucket = (bucket * 31 + string.byte(id, i)) % 1024
  end
  return prefix .. bucket
end

-- Pack a new job's field, value pairs (ARGV from `first`), leaving out its status. The
-- enqueue time goes in as a number (9 bytes, not 13 characters): Redis keeps a packed
-- hash compact only while each entry is at most hash-max-listpack-value (64) bytes.
local function pack_job(bucket, id, first)
  local fields = {}
  for i = first, #ARGV, 2 do
    local name, value = ARGV[i], ARGV[i + 1]
    if name ~= 's' then
      fields[#fields + 1] = name
      fields[#fields + 1] = name == 'e' and tonumber(value) or value
    end
  end
  redis.call('HSET', bucket, id, cmsgpack.pack(fields))
end

-- A record has about 25 fields: an entry with more values than this is corrupt.
local MAX_PACKED_VALUES = 64

-- A packed job's field, value pairs with status 'queued', read without changing anything;
-- nil if it is not packed (nor when something else overwrote the bucket). An unreadable
-- entry (not msgpack, not a flat list of text, or far too long) yields only the status, so
-- the job still gets a hash and the worker fails it as corrupt (a raise here would abort
-- the script halfway: Redis does not roll a script back).
local function read_packed(bucket, id)
  local blob = redis.pcall('HGET', bucket, id)
  if type(blob) ~= 'string' then return nil end  -- absent, or the bucket is not a hash
  local ok, fields = pcall(cmsgpack.unpack, blob)
  if not ok or type(fields) ~= 'table' or #fields % 2 == 1 or #fields > MAX_PACKED_VALUES then
    fields = {}
  end
  for i, value in ipairs(fields) do
    if type(value) == 'number' then
      fields[i] = string.format('%.0f', value)
    elseif type(value) ~= 'string' then
      fields = {}
      break
    end
  end
  fields[#fields + 1] = 's'
  fields[#fields + 1] = 'queued'
  return fields
end

-- Take a packed job out of its bucket: read_packed, then the entry is removed.
local function take_packed(bucket, id)
  local fields = read_packed(bucket, id)
  if fields then redis.call('HDEL', bucket, id) end
  return fields
end

-- Give a packed job its own hash (before a script changes it); false if it was not packed.
-- The caller has checked that the job key is a hash or absent.
local function unpack_job(job, bucket, id)
  local fields = take_packed(bucket, id)
  if not fields then return false end
  redis.call('HSET', job, unpack(fields))
  return true
end
