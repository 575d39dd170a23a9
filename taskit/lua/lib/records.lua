-- Shared (include guard first): where a job's fields are (storage/keys.py, "Per tag").
-- A job not ended has a record in one of its tag's buckets (id -> msgpack [field, value,
-- ...] as enqueued, without its status while it is 'queued'; the enqueue time as a
-- number) and, once anything changed, a state entry in the tag's state hash (the same
-- form): the state overrides the record. An ended job has a hash of its own: its record,
-- still packed, in field 'p' (so ending a job never unpacks it), and the fields of its
-- state and end beside it, which override the record.
-- A tag's keys come in KEYS as a block (tag_block): state hash, expiry zset, settle zset,
-- queue set, workers zset, then its buckets.

-- A block of a tag's keys from KEYS[first..]; returns it and the index after it. Its buckets
-- stay in KEYS (bucket_of reads KEYS[before_buckets + b]): a copy into a table of their own,
-- 64 keys, cost Redis ~49k instructions a claim (13% of an idle worker's claim of one job).
local function tag_block(first, buckets)
  local block = {state = KEYS[first], expiry = KEYS[first + 1], settle = KEYS[first + 2],
                 queues = KEYS[first + 3], workers = KEYS[first + 4], before_buckets = first + 4, buckets = buckets}
  return block, first + 5 + buckets
end

-- The bucket of a job (keys.bucket_index computes the same): (index * 31 + byte) % n over
-- the id's bytes. When 31 * 31 = 1 modulo n (n divides 960: 64 does), that is the sum of
-- the bytes at an even distance from the end plus 31 times the sum of the others, modulo
-- n: sixteen bytes a step and the rest in one more, with no modulo per byte (a claim
-- computes it for every job, and each call of string.byte costs more than the sums).
local byte = string.byte
local function bucket_of(block, id)
  local n, length = block.buckets, #id
  if 960 % n ~= 0 then
    local index = 0
    for i = 1, length do
      index = (index * 31 + byte(id, i)) % n
    end
    return KEYS[block.before_buckets + index + 1]
  end
  local odd, even, i = 0, 0, 1  -- bytes at odd and even positions from the start (i stays odd)
  if length >= 24 and length <= 26 then  -- an id taskit made (a tag of 1 to 3 characters, '.', 22): in one call
    local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16, b17, b18, b19, b20, b21, b22, b23,
          b24, b25, b26 = byte(id, 1, length)
    odd = b1 + b3 + b5 + b7 + b9 + b11 + b13 + b15 + b17 + b19 + b21 + b23 + (b25 or 0)
    even = b2 + b4 + b6 + b8 + b10 + b12 + b14 + b16 + b18 + b20 + b22 + b24 + (b26 or 0)
    i = length + 1
  end
  while i + 15 <= length do
    local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16 = byte(id, i, i + 15)
    odd = odd + b1 + b3 + b5 + b7 + b9 + b11 + b13 + b15
    even = even + b2 + b4 + b6 + b8 + b10 + b12 + b14 + b16
    i = i + 16
  end
  if i <= length then  -- the rest: at most 15 bytes (nil past the end)
    local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15 = byte(id, i, length)
    odd = odd + b1 + (b3 or 0) + (b5 or 0) + (b7 or 0) + (b9 or 0) + (b11 or 0) + (b13 or 0) + (b15 or 0)
    even = even + (b2 or 0) + (b4 or 0) + (b6 or 0) + (b8 or 0) + (b10 or 0) + (b12 or 0) + (b14 or 0)
  end
  -- the last byte is at distance 0 (even): the same parity of position as the length
  if length % 2 == 1 then odd, even = even, odd end
  return KEYS[block.before_buckets + (even + 31 * odd) % n + 1]
end

-- A record has about 25 fields, a state entry fewer: an entry with more values is corrupt.
local MAX_PACKED_VALUES = 64

-- Fields from a packed entry: nil when there is none (nor when its hash is of another
-- type: redis.pcall's error is a table); an unreadable entry (not msgpack, not a flat list
-- of text, or far too long) gives {} (the job is then failed as corrupt by its worker: a
-- raise here would abort the script halfway, and Redis does not roll a script back).
local mp_unpack, format = cmsgpack.unpack, string.format
local function unpacked(blob)
  if type(blob) ~= 'string' then return nil end
  local ok, flat = pcall(mp_unpack, blob)
  if not ok or type(flat) ~= 'table' then return {} end
  local n = #flat
  if n % 2 == 1 or n > MAX_PACKED_VALUES then return {} end
  -- (sized for a state entry and an ended job's end fields at once: a table grown key by
  -- key is rebuilt at 1, 2, 4 and 8 keys)
  local fields = {s = nil, st = nil, w = nil, n = nil, al = nil, en = nil, p = nil, x = nil}
  for i = 1, n, 2 do
    local name, value = flat[i], flat[i + 1]
    local kind = type(value)
    if kind ~= 'string' then
      if kind ~= 'number' then return {} end
      value = format('%.0f', value)
    end
    if type(name) ~= 'string' then return {} end
    fields[name] = value
  end
  return fields
end

-- A map as a flat list, for HSET and for replies.
local function flat(fields)
  local list, n = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, 0
  for name, value in pairs(fields) do
    list[n + 1], list[n + 2] = name, value
    n = n + 2
  end
  return list
end

local function packed(fields)
  return cmsgpack.pack(flat(fields))
end

-- A job's record and state entry (each nil when absent).
local function read_parts(bucket, state, id)
  return unpacked(redis.pcall('HGET', bucket, id)), unpacked(redis.pcall('HGET', state, id))
end

-- The fields of a job not ended: its record overridden by its state; status 'queued' when
-- neither says. nil when it has neither.
local function merged(record, state_fields)
  if not record and not state_fields then return nil end
  local fields = {}
  for name, value in pairs(record or {}) do fields[name] = value end
  for name, value in pairs(state_fields or {}) do fields[name] = value end
  if not fields.s then fields.s = 'queued' end
  return fields
end

local function write_state(state, id, fields)
  redis.call('HSET', state, id, packed(fields))
end

-- Forget a job's record, state and ttl (it ended, or was deleted). `ttl`: false when the
-- job is known to have none (nothing to remove from the expiry zset).
local function drop_parts(bucket, state, expiry, id, ttl)
  redis.pcall('HDEL', bucket, id)  -- a bucket that is not a hash holds no job
  redis.call('HDEL', state, id)
  if ttl ~= false then redis.call('ZREM', expiry, id) end
end

-- A new job's record is packed by the client (storage/store.py `pack_record`), in the
-- form above: without a 'queued' status, its enqueue time as a number (9 bytes, not 13
-- characters: Redis keeps a bucket compact only while each entry is at most
-- hash-max-listpack-value (64) bytes), every other value a string.

-- Whether a packed record may be one (a msgpack array): a cheap check for the paths that
-- copy a record without unpacking it.
local function looks_packed(blob)
  local lead = string.byte(blob, 1)
  return lead ~= nil and ((lead >= 0x90 and lead <= 0x9f) or lead == 0xdc or lead == 0xdd)
end

-- Write an ended job's own hash `job` anew from `...` (`count` fields: field, value, ...),
-- kept `keep` seconds (-1: forever; never 0: a job not kept is deleted instead). (A job not ended has no hash of its own: a key there,
-- of any type, was put there by hand, and is replaced.) The fields come as arguments, not
-- as a list, so that a caller can send a list it keeps (unpack(list)) after a few of its
-- own, with no list made per job (finish.lua's usual case).
-- (A keep goes to EXPIRE as text made once per value: Redis makes a number argument text
-- with a printf of its own, at every call.)
local keep_texts = {}
local function write_own(job, keep, count, ...)
  local written = redis.pcall('HSET', job, ...)
  if written ~= count then  -- another type (an error reply), or a hash there (fewer fields new)
    redis.call('DEL', job)
    redis.call('HSET', job, ...)
  end
  if keep > 0 then
    local text = keep_texts[keep]
    if not text then text = string.format('%d', keep); keep_texts[keep] = text end
    redis.call('EXPIRE', job, text)
  end
end

-- Write an ended job into its own hash: its packed record `blob` (nil if it has none) and
-- `fields` (a map: its state and end), kept `keep` seconds (-1 forever, 0: not at all);
-- its record, state and ttl are forgotten (`write_own`). `later`: nil, or a list the
-- id is added to, for a caller that deletes the state entries of a batch in one HDEL.
local function write_ended(job, bucket, state, expiry, id, blob, fields, keep, later)
  if later then
    redis.pcall('HDEL', bucket, id)  -- a bucket that is not a hash holds no job
    later[#later + 1] = id
  else
    drop_parts(bucket, state, expiry, id, false)
  end
  if keep == 0 then
    redis.call('DEL', job)
    return
  end
  if type(blob) == 'string' then fields.p = blob end
  local list = flat(fields)
  write_own(job, keep, #list / 2, unpack(list))
end

-- An ended job's fields (a map): its record unpacked from 'p', overridden by the rest; nil
-- if it has no hash.
local function ended_fields(job)
  local pairs_ = redis.call('HGETALL', job)
  if #pairs_ == 0 then return nil end
  local own = {}
  for i = 1, #pairs_, 2 do own[pairs_[i]] = pairs_[i + 1] end
  local fields = own.p and unpacked(own.p) or {}
  own.p = nil
  for name, value in pairs(own) do fields[name] = value end
  return fields
end
