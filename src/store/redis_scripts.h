// The Lua scripts of RedisStore (redis_store.cc), one per state change of a job or run.
//
// Every tenant script is kPrelude followed by its body, loaded once with SCRIPT LOAD and called
// with EVALSHA. A script does all of its checks before its first write: Redis does not roll a
// script back, and refuses an out-of-memory script at its first write, so a script that returns
// an error, or is refused, has written nothing.
//
// Key layout (P = "<prefix>:{t:<tenant>}:", every key carries the tenant's hash tag):
//   P job:<id>        hash  s (state) v (version) c (created) nf (next fire, "" = none), and only
//                           when they differ from their default: u (updated; c) ds
//                           (dependency_since; c) q (queue; default) p (paused "1") d
//                           (space-separated depends_on); l:<label key>=<value>; the spec
//                           (compact JSON without its id) in 60-byte pieces j j2 j3 ...
//   P jobs            chunked index (below) of job ids (ListJobs, in id order)
//   P due             chunked index of "<next fire ms, 16 digits>:<job id>": the active, unpaused
//                           jobs with a next fire (DueJobs, NextFireTime)
//                     A chunked index is an ordered set of strings kept as small sorted sets, so
//                     that Redis stores each packed (a listpack: ~15-30 bytes a member, where
//                     one sorted set of a million members is a skiplist at ~115): the
//                     directory P<name> (zset, score 0) holds each chunk's lower bound, "" for
//                     the first; chunk P<name>:<bound> (zset, score 0, lexicographic) holds the
//                     members >= its bound and below the next bound, at most CHUNK of them
//                     (a full chunk splits; one left with a quarter merges with a neighbour).
//                     The first chunk is never empty while another holds members (an emptied
//                     first chunk takes in the next one): its first member is the index's
//                     first, read without a script (NextFireTime, DueJobs).
//   P job_counts      hash  job state -> number of jobs (CountJobs)
//   P tenant          hash  id max_jobs max_concurrent_runs created updated, ql:<queue>=limit
//                           (PutTenant; the quotas the scripts enforce)
//   P run:<id>        hash  the run (field names: see RunArgs in redis_store.cc; empty fields,
//                           and cancel excl lost at 0, are left out); the attempts
//                           before the current one are netstrings in `attempts`, the current
//                           one is in a_num a_node a_fence a_start a_end a_outcome a_error
//   P runs            zset  "<created ms, 16 digits>:<run id>", score 0 (ListRuns, newest first)
//   P runs:<job>      zset  the same, one job's history (ListRuns of a job, PruneRuns)
//   P runjobs         set   job ids that have run history (PruneRuns)
//   P queues          set   queue names that ever had a claimable run (claims of every queue)
//   P ready:<queue>   zset  queued and retry-waiting run ids -> (9 - priority) * 2^44 +
//                           available ms: one score band per priority, FIFO inside a band
//   P pending         zset  the same runs -> available ms (NextAvailableTime)
//   P active:<job>    set   queued, retry-waiting and running runs of a job (ActiveRuns)
//   P running:<job>   set   running runs of a job (the exclusive check of a claim)
//   P leases          zset  running run ids -> lease deadline ms (reaper; running count)
//   P finished:<job>  zset  succeeded/failed/timed_out run ids -> finished ms (barriers)
//   P counts          hash  "<queue>|<state>" -> runs, "<queue>|<state>|d" -> summed duration ms
//   P jcounts:<job>   hash  the same for one job (CountRuns)
//   P events          stream  entry id "<seq>-0", fields time type job run data (capped)
//   P layout, P jobs.v1  string, zset  only in a store that held layout 1 data: migrate_jobs
// Store-wide ("<prefix>:{sys}:"): layout (the version of this layout: "5"), event_seq and fence
// (counters), ready (zset: tenant -> the first score of its pending, for the tenants with claimable
// runs below their quota), due (zset: tenant -> the ms of the first member of its due index, for
// the tenants with due jobs) and leases (zset: tenant -> the first score of its leases, for the
// tenants with running runs), all kept by the tenant scripts; tenants (set of tenants with data),
// node:<id> (hash) and nodes (zset id -> heartbeat ms), keys (hash key id -> secret hash) and
// key:<secret hash> (hash).
#pragma once

namespace jobsched::redis_scripts {

// Shared helpers, prepended to every tenant script. "@EVENT_CAP@" is replaced by the configured
// cap of a tenant's event stream.
inline constexpr char kPrelude[] = R"lua(
-- Prelude of every tenant script.
-- KEYS[1]: the tenant's key prefix "<prefix>:{t:<tenant>}:". Every tenant key is built from it
--          and carries its hash tag: all of them live in one slot.
-- KEYS[2]: "<prefix>:{sys}:event_seq", the store-wide event sequence (INCR per event).
-- KEYS[3]: "<prefix>:{sys}:fence", the store-wide fencing-token counter (INCR per claim).
-- KEYS[4]: "<prefix>:{sys}:ready", the tenants with claimable runs -> the earliest available ms
--          of their runs (the first score of their `pending`), but for a tenant whose running
--          runs fill its max_concurrent_runs: kept by every change of `pending`, of `leases` and
--          of the quota (sync_ready), so that claims look only at tenants with work they may take.
-- KEYS[5]: "<prefix>:{sys}:due", the tenants with due jobs -> the earliest next fire ms of their
--          jobs (the first member of their `due` index): kept by every change of `due`
--          (sync_due), so that the schedulers look only at tenants with something to fire.
-- KEYS[6]: "<prefix>:{sys}:leases", the tenants with running runs -> the earliest lease deadline
--          ms of their runs (the first score of their `leases`): kept by every change of
--          `leases` (sync_leases), so that the reaper looks only at tenants with running runs.
local P = KEYS[1]
local TENANT = string.match(P, '{t:([^{}]*)}:$')
local BAND = 17592186044416
local EVENT_CAP = '@EVENT_CAP@'  -- a string: passed to XADD as it is
local K_EVENTS = P .. 'events'
local K_PENDING = P .. 'pending'
local K_LEASES = P .. 'leases'
local CLAIMABLE = {queued = true, retry_wait = true}
local FINISHED = {succeeded = true, failed = true, timed_out = true}
local TERMINAL = {succeeded = true, failed = true, timed_out = true, cancelled = true, skipped = true}

local function int(n) return string.format('%d', n) end
local function opt(s) return s ~= nil and s ~= false and s ~= '' end
local function jstr(s) return cjson.encode(s) end
-- A JSON object from a flat list of key, raw JSON value.
local function jobj(kv)
  local parts = {}
  for i = 1, #kv, 2 do parts[#parts + 1] = jstr(kv[i]) .. ':' .. kv[i + 1] end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- Deferred writes. A script that changes many runs at once (enqueue, claim, complete) calls
-- defer() first and flush() before it returns: in between, the changes of set and sorted-set
-- membership (sadd, srem, zadd, zrem), of the counters (tally) and the events (emit) are
-- gathered and written by flush(), one command per key instead of one per run. A deferring
-- script must not read back, before flush(), what it deferred.
local BUF
-- The tenant's entry in store-wide index `key` (KEYS[4], [5] or [6]) set to `score`, or taken
-- out (score nil or false).
local function index_tenant(key, score)
  if score then
    redis.call('ZADD', key, score, TENANT)
  else
    redis.call('ZREM', key, TENANT)
  end
end
-- The tenant's entry in KEYS[6] made to agree with its `leases` index.
local function sync_leases()
  index_tenant(KEYS[6], redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')[2])
end
-- The tenant's entry in KEYS[4] made to agree with its `pending` index and its quota: after a
-- change of `pending` or `leases` (the running runs) made at once, or at flush() when deferred.
local PENDING_CHANGED, LEASES_CHANGED = false, false
local function sync_ready()
  PENDING_CHANGED = false
  local first = redis.call('ZRANGE', K_PENDING, 0, 0, 'WITHSCORES')
  local open = first[1] ~= nil
  if open then
    local quota = tonumber(redis.call('HGET', P .. 'tenant', 'max_concurrent_runs') or '0') or 0
    open = quota <= 0 or redis.call('ZCARD', K_LEASES) < quota
  end
  index_tenant(KEYS[4], open and first[2])
end
local function defer() BUF = {keys = {}, order = {}, counts = {}, corder = {}, events = {}} end
-- Sets member m of key to `value` (a score, true: present; false: absent): now, or when deferring
-- at flush. The last change of a member wins, as it would one after the other.
local function member(kind, key, m, value)
  if not BUF then
    if kind == 'z' then
      if value then redis.call('ZADD', key, value, m) else redis.call('ZREM', key, m) end
      if key == K_PENDING or key == K_LEASES then sync_ready() end
      if key == K_LEASES then sync_leases() end
    elseif value then
      redis.call('SADD', key, m)
    else
      redis.call('SREM', key, m)
    end
    return
  end
  if key == K_PENDING or key == K_LEASES then PENDING_CHANGED = true end
  if key == K_LEASES then LEASES_CHANGED = true end
  local k = BUF.keys[key]
  if not k then
    k = {kind = kind, v = {}, order = {}}
    BUF.keys[key] = k
    BUF.order[#BUF.order + 1] = key
  end
  if k.v[m] == nil then k.order[#k.order + 1] = m end
  k.v[m] = value
end
local function zadd(key, score, m) member('z', key, m, score) end
local function zrem(key, m) member('z', key, m, false) end
local function sadd(key, m) member('s', key, m, true) end
local function srem(key, m) member('s', key, m, false) end
-- Adds n to field f of counter hash key, and d to f|d (a summed duration); a count that reaches
-- 0 leaves the hash with its duration.
local function count_apply(key, f, n, d)
  if redis.call('HINCRBY', key, f, n) <= 0 then
    redis.call('HDEL', key, f, f .. '|d')
  elseif d ~= 0 then
    redis.call('HINCRBY', key, f .. '|d', d)
  end
end
local function count(key, f, n, d)
  if not BUF then return count_apply(key, f, n, d) end
  local fs = BUF.counts[key]
  if not fs then
    fs = {}
    BUF.counts[key] = fs
  end
  local c = fs[f]
  if not c then
    c = {key = key, f = f, n = 0, d = 0}
    fs[f] = c
    BUF.corder[#BUF.corder + 1] = c
  end
  c.n, c.d = c.n + n, c.d + d
end
local function xadd(seq, e)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENT_CAP, int(seq) .. '-0', 'time', e[1],
             'type', e[2], 'job', e[3], 'run', e[4], 'data', e[5])
end
-- Appends an event to the tenant's stream; returns its seq (nil when deferring).
local function emit(time, etype, job, run, data)
  if BUF then
    BUF.events[#BUF.events + 1] = {time, etype, job, run, data}
    return nil
  end
  local seq = redis.call('INCR', KEYS[2])
  xadd(seq, {time, etype, job, run, data})
  return seq
end
-- Writes what was deferred: membership (one command per key and change, at most 1,000
-- arguments), counters, then the events, with a block of sequence numbers taken at once.
local function flush()
  local function send(cmd, key, args)
    for i = 1, #args, 1000 do
      redis.call(cmd, key, unpack(args, i, math.min(#args, i + 999)))
    end
  end
  for _, key in ipairs(BUF.order) do
    local k = BUF.keys[key]
    local add, rem = {}, {}
    for _, m in ipairs(k.order) do
      local v = k.v[m]
      if v == false then
        rem[#rem + 1] = m
      else
        if k.kind == 'z' then add[#add + 1] = v end
        add[#add + 1] = m
      end
    end
    if #add > 0 then send(k.kind == 'z' and 'ZADD' or 'SADD', key, add) end
    if #rem > 0 then send(k.kind == 'z' and 'ZREM' or 'SREM', key, rem) end
  end
  for _, c in ipairs(BUF.corder) do
    if c.n ~= 0 or c.d ~= 0 then count_apply(c.key, c.f, c.n, c.d) end
  end
  if PENDING_CHANGED then sync_ready() end
  if LEASES_CHANGED then
    LEASES_CHANGED = false
    sync_leases()
  end
  local events = BUF.events
  BUF = nil
  if #events > 0 then
    local last = redis.call('INCRBY', KEYS[2], #events)
    for i, e in ipairs(events) do xadd(last - #events + i, e) end
  end
end

-- A hash as a table (nil when absent), with the set of fields changed since (see set, save).
local function hash(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local t = {_dirty = {}}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
-- A record passed in ARGV from index i: a field count n, then n field, value pairs.
local function read_record(i)
  local r = {_dirty = {}}
  local n = tonumber(ARGV[i])
  for j = 1, n do r[ARGV[i + 2 * j - 1]] = ARGV[i + 2 * j] end
  return r, i + 2 * n + 1
end

-- ---- Jobs ----
local function job_count(state, sign)
  if redis.call('HINCRBY', P .. 'job_counts', state, sign) <= 0 then
    redis.call('HDEL', P .. 'job_counts', state)
  end
end
-- A job hash read by a script: the defaults of the fields left out (see the key layout).
local function job_hash(key)
  local j = hash(key)
  if not j then return nil end
  j.nf, j.q, j.p, j.d, j.ds = j.nf or '', j.q or 'default', j.p or '0', j.d or '', j.ds or j.c
  return j
end
-- A job's hash fields, as a flat list (labels are the caller's to add). Those at their default
-- are left out (job_hash puts them back; nil counts as the default); the spec is cut in pieces
-- of at most 60 bytes ("j", "j2", ...): a hash whose values all fit hash-max-listpack-value
-- (64) is stored packed, at a fraction of the memory.
local function job_fields(state, version, created, next_fire, updated, dep_since, queue, paused,
                          deps, spec)
  local fields = {'s', state, 'v', version, 'c', created, 'nf', next_fire}
  local function field(name, value, default)
    if value and value ~= default then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  field('u', updated, created)
  field('ds', dep_since, created)
  field('q', queue, 'default')
  field('p', paused, '0')
  field('d', deps, '')
  for i = 0, math.max(0, math.ceil(#spec / 60) - 1) do
    fields[#fields + 1] = i == 0 and 'j' or ('j' .. (i + 1))
    fields[#fields + 1] = string.sub(spec, i * 60 + 1, i * 60 + 60)
  end
  return fields
end
-- The job's hash as a script returns it (HGETALL and its id, which the hash leaves to its key).
local function job_reply(id)
  local h = redis.call('HGETALL', P .. 'job:' .. id)
  if #h > 0 then
    h[#h + 1] = 'id'
    h[#h + 1] = id
  end
  return h
end

-- ---- Chunked indexes (see the key layout) ----
local CHUNK = 96
-- The lower bound of the chunk of index `name` where member m belongs (nil: no chunk yet).
local function chunk_of(name, m)
  return redis.call('ZREVRANGEBYLEX', P .. name, '[' .. m, '-', 'LIMIT', 0, 1)[1]
end
local function cx_add(name, m)
  local b = chunk_of(name, m)
  if not b then
    b = ''
    redis.call('ZADD', P .. name, 0, '')
  end
  local key = P .. name .. ':' .. b
  if redis.call('ZADD', key, 0, m) == 0 or redis.call('ZCARD', key) <= CHUNK then return end
  -- Full: its upper half becomes a chunk of its own; or, when m is its last member (members
  -- added in order), m alone, so that chunks filled in order stay full.
  local from = CHUNK / 2
  if redis.call('ZRANK', key, m) == CHUNK then from = CHUNK end
  local upper = redis.call('ZRANGE', key, from, -1)
  local args = {}
  for _, u in ipairs(upper) do
    args[#args + 1] = 0
    args[#args + 1] = u
  end
  redis.call('ZADD', P .. name .. ':' .. upper[1], unpack(args))
  redis.call('ZREMRANGEBYRANK', key, from, -1)
  redis.call('ZADD', P .. name, 0, upper[1])
end
-- Moves the members of chunk `from` of index `name` into chunk `to`; `from` leaves the directory.
local function cx_merge(name, to, from)
  local key = P .. name .. ':' .. from
  local args = {}
  for _, x in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    args[#args + 1] = 0
    args[#args + 1] = x
  end
  if #args > 0 then redis.call('ZADD', P .. name .. ':' .. to, unpack(args)) end
  redis.call('DEL', key)
  redis.call('ZREM', P .. name, from)
end
-- A chunk left with at most CHUNK / 4 members takes in the next chunk, or else goes into the
-- previous one, when the two fit in one chunk: an index that shrinks keeps few, full chunks
-- (and an emptied chunk leaves the directory; the first one stays).
local function cx_rem(name, m)
  local b = chunk_of(name, m)
  if not b then return end
  local key = P .. name .. ':' .. b
  if redis.call('ZREM', key, m) == 0 then return end
  local n = redis.call('ZCARD', key)
  if n > CHUNK / 4 then return end
  local next_b = redis.call('ZRANGEBYLEX', P .. name, '(' .. b, '+', 'LIMIT', 0, 1)[1]
  if next_b and n + redis.call('ZCARD', P .. name .. ':' .. next_b) <= CHUNK then
    cx_merge(name, b, next_b)
  elseif b ~= '' then
    local prev = redis.call('ZREVRANGEBYLEX', P .. name, '(' .. b, '-', 'LIMIT', 0, 1)[1]
    if prev and n + redis.call('ZCARD', P .. name .. ':' .. prev) <= CHUNK then
      cx_merge(name, prev, b)
    end
  end
end
-- Calls fn(member) on the members of index `name` in order, from m (included when incl, else
-- excluded; "" = from the first), until fn returns false.
local function cx_each(name, m, incl, fn)
  local b = chunk_of(name, m)
  local lo = m == '' and '-' or ((incl and '[' or '(') .. m)
  while b do
    for _, x in ipairs(redis.call('ZRANGEBYLEX', P .. name .. ':' .. b, lo, '+')) do
      if fn(x) == false then return end
    end
    b = redis.call('ZRANGEBYLEX', P .. name, '(' .. b, '+', 'LIMIT', 0, 1)[1]
    lo = '-'
  end
end

local function due_member(id, next_fire)
  return string.format('%016d', math.max(0, tonumber(next_fire))) .. ':' .. id
end
-- The tenant's entry in KEYS[5] made to agree with its `due` index: the ms of the index's first
-- member, the first of its first chunk "due:" (never empty while the index has members).
local function sync_due()
  local first = redis.call('ZRANGE', P .. 'due:', 0, 0)[1]
  index_tenant(KEYS[5], first and tonumber(string.sub(first, 1, 16)))
end
-- Moves job id in the due index from where (old) put it to where (state, paused, next_fire)
-- put it: only an active, unpaused job with a next fire is due.
local function update_due(id, old, state, paused, next_fire)
  local was = old and old.s == 'active' and old.p == '0' and old.nf ~= ''
  local is = state == 'active' and paused == '0' and next_fire ~= ''
  local moved = false
  if was and not (is and next_fire == old.nf) then
    cx_rem('due', due_member(id, old.nf))
    moved = true
  end
  if is and not (was and next_fire == old.nf) then
    cx_add('due', due_member(id, next_fire))
    moved = true
  end
  if moved then sync_due() end
end
local function job_event(id, time, etype, state, version)
  emit(time, etype, id, '', jobj({'state', jstr(state), 'version', version}))
end

-- ---- Runs ----
local function run_key(id) return P .. 'run:' .. id end
-- A run table is the whole hash (hash()), or, where a script reads only some fields (HMGET), a
-- partial one (_partial): a field it did not read may be in the hash although nil in the table.
local function set(r, k, v)
  if v == '' and r[k] == nil and not r._partial then return end  -- missing reads as empty
  r[k] = v
  r._dirty[k] = true
end
-- Writes the changed fields; a field set to empty is left out (deleted).
local function save(r)
  local args, gone = {}, {}
  for k in pairs(r._dirty) do
    if r[k] == '' then
      gone[#gone + 1] = k
    else
      args[#args + 1] = k
      args[#args + 1] = r[k]
    end
  end
  if #args > 0 then redis.call('HSET', run_key(r.id), unpack(args)) end
  if #gone > 0 then redis.call('HDEL', run_key(r.id), unpack(gone)) end
  r._dirty = {}
end
-- A partial run table of the fields `names` of run id (nil when the run does not exist).
local function fields(id, names)
  local v = redis.call('HMGET', run_key(id), unpack(names))
  local r = {_dirty = {}, _partial = true}
  for i, name in ipairs(names) do r[name] = v[i] or nil end
  if not r.state then return nil end
  r.id = id
  return r
end
-- The member of the history indexes: ordered by (created_at, id) as bytes.
local function lex(created, id)
  local c = tonumber(created) or 0
  if c < 0 then c = 0 end
  return string.format('%016d', c) .. ':' .. id
end
local function by_created(a, b)
  local ca, cb = tonumber(a.created), tonumber(b.created)
  if ca ~= cb then return ca < cb end
  return a.id < b.id
end
local function ready_score_of(prio, avail)
  local p = tonumber(prio) or 5
  if p < 0 then p = 0 elseif p > 9 then p = 9 end
  local a = tonumber(avail) or 0
  if a < 0 then a = 0 elseif a >= BAND then a = BAND - 1 end
  return (9 - p) * BAND + a
end
local function ready_score(r) return ready_score_of(r.prio, r.avail) end
local function duration_of(started, finished)
  if not opt(started) or not opt(finished) then return 0 end
  return tonumber(finished) - tonumber(started)
end
local function duration(r) return duration_of(r.started, r.finished) end
-- The keys of the run indexes, built once per script (and per job and queue).
local K_COUNTS, K_QUEUES = P .. 'counts', P .. 'queues'
local job_keys, queue_keys = {}, {}
local function jk(job)
  local k = job_keys[job]
  if not k then
    k = {active = P .. 'active:' .. job, running = P .. 'running:' .. job,
         finished = P .. 'finished:' .. job, counts = P .. 'jcounts:' .. job}
    job_keys[job] = k
  end
  return k
end
local function ready_key(queue)
  local k = queue_keys[queue]
  if not k then
    k = {ready = P .. 'ready:' .. queue, groups = {}}
    queue_keys[queue] = k
  end
  return k
end
-- Counts a run in (sign 1) or out of (sign -1) its (queue, state) group, tenant-wide and per
-- job, with its duration d.
local function tally_of(queue, state, job, sign, d)
  local groups = ready_key(queue).groups
  local f = groups[state]
  if not f then
    f = queue .. '|' .. state
    groups[state] = f
  end
  count(K_COUNTS, f, sign, sign * d)
  count(jk(job).counts, f, sign, sign * d)
end
local function tally(r, sign) tally_of(r.queue, r.state, r.job, sign, duration(r)) end
-- Removes r from the indexes of its current state; index(r) adds it to those of its (new) state.
-- A state change is unindex(r), the changes, index(r), save(r).
local function unindex(r)
  local s, id, j = r.state, r.id, jk(r.job)
  if CLAIMABLE[s] then
    zrem(ready_key(r.queue).ready, id)
    zrem(K_PENDING, id)
    srem(j.active, id)
  elseif s == 'running' then
    zrem(K_LEASES, id)
    srem(j.running, id)
    srem(j.active, id)
  elseif FINISHED[s] then
    zrem(j.finished, id)
  end
  tally(r, -1)
end
local function index(r)
  local s, id, j = r.state, r.id, jk(r.job)
  if CLAIMABLE[s] then
    zadd(ready_key(r.queue).ready, ready_score(r), id)
    zadd(K_PENDING, r.avail, id)
    sadd(j.active, id)
    sadd(K_QUEUES, r.queue)
  elseif s == 'running' then
    zadd(K_LEASES, r.lease, id)
    sadd(j.running, id)
    sadd(j.active, id)
  elseif FINISHED[s] then
    zadd(j.finished, r.finished, id)
  end
  tally(r, 1)
end
-- "run.<state>" (or etype) with {"state", "attempt", "node"} plus extra (key, raw JSON pairs;
-- the keys are plain words).
local function run_event(r, time, etype, extra)
  local data = '{"state":"' .. r.state .. '","attempt":' .. r.attempt .. ',"node":' ..
               jstr(r.node or '')
  for i = 1, #extra, 2 do data = data .. ',"' .. extra[i] .. '":' .. extra[i + 1] end
  emit(time, etype or ('run.' .. r.state), r.job, r.id, data .. '}')
end
-- queued / retry-waiting -> cancelled; running -> cancel requested; other states: no change.
local function cancel(r, now, why)
  if CLAIMABLE[r.state] then
    unindex(r)
    set(r, 'state', 'cancelled')
    set(r, 'finished', now)
    set(r, 'lease', '')
    set(r, 'error', why)
    index(r)
    save(r)
    run_event(r, now, nil, {'reason', jstr(why)})
  elseif r.state == 'running' and r.cancel ~= '1' then
    set(r, 'cancel', '1')
    save(r)
    run_event(r, now, 'run.cancel_requested', {'reason', jstr(why)})
  end
end
-- Attempts: the finished ones before the current are netstrings ("<len>:<bytes>", 7 per
-- attempt: number node fence start end outcome error) in `attempts`.
local function ns(s)
  s = s or ''
  return #s .. ':' .. s
end
local function close_attempt(r)
  if not opt(r.a_num) then return end
  set(r, 'attempts', (r.attempts or '') .. ns(r.a_num) .. ns(r.a_node) .. ns(r.a_fence) ..
      ns(r.a_start) .. ns(r.a_end) .. ns(r.a_outcome) .. ns(r.a_error))
  set(r, 'a_num', '')
end
local function end_attempt(r, now, outcome, err)
  if not opt(r.a_num) then
    -- No attempt recorded (the run was not claimed by a claim): record the one we know of.
    set(r, 'a_num', r.attempt)
    set(r, 'a_node', r.node or '')
    set(r, 'a_fence', r.fence or '0')
    set(r, 'a_start', opt(r.started) and r.started or now)
  end
  set(r, 'a_end', now)
  set(r, 'a_outcome', outcome)
  set(r, 'a_error', err)
end
local ZERO_OMITTED = {cancel = true, excl = true, lost = true}
-- Inserts a new run (a record from read_record) with its event; false if its id exists.
local function insert_run(r)
  local key = run_key(r.id)
  if redis.call('EXISTS', key) == 1 then return false end
  -- Skipped is terminal: it needs a finished_at for retention.
  if r.state == 'skipped' and not opt(r.finished) then r.finished = r.created end
  -- Empty fields, and the flags and counters that are 0, are left out (missing reads as empty or
  -- 0, here and in RunFromHash).
  local args = {}
  for k, v in pairs(r) do
    if k ~= '_dirty' and v ~= '' and not (v == '0' and ZERO_OMITTED[k]) then
      args[#args + 1] = k
      args[#args + 1] = v
    end
  end
  redis.call('HSET', key, unpack(args))
  local m = lex(r.created, r.id)
  redis.call('ZADD', P .. 'runs:' .. r.job, 0, m)
  redis.call('ZADD', P .. 'runs', 0, m)
  redis.call('SADD', P .. 'runjobs', r.job)
  index(r)
  local extra = {'reason', jstr(r.reason)}
  if r.state == 'skipped' and opt(r.error) then
    extra[3] = 'error'
    extra[4] = jstr(r.error)
  end
  run_event(r, r.created, nil, extra)
  return true
end
)lua";

// ---- Jobs -----------------------------------------------------------------------------------

inline constexpr char kPutJob[] = R"lua(
-- put_job: CreateJob ("create") and PutJob ("put").
-- KEYS: the prelude's.
-- ARGV[1] mode: "create" (the job must not exist) or "put" (create or replace);
-- ARGV[2] expected version ("" = none); ARGV[3] job id; ARGV[4] spec (compact JSON without
-- its id); ARGV[5] queue; ARGV[6] paused "0"/"1"; ARGV[7] state; ARGV[8] next_fire ms ("" =
-- none); ARGV[9] dependency_since ms; ARGV[10] created_at ms; ARGV[11] updated_at ms;
-- ARGV[12] depends_on, space-separated; ARGV[13] number of labels n, then n key, value pairs.
-- Returns {"ok", the job (flat, as job_reply)} | {"exists"} | {"not_found"}
--   | {"precondition", version} | {"exhausted", max_jobs}.
local mode, expected, id = ARGV[1], ARGV[2], ARGV[3]
local key = P .. 'job:' .. id
local old = job_hash(key)
if mode == 'create' and old then return {'exists'} end
if expected ~= '' then
  if not old then return {'not_found'} end
  if old.v ~= expected then return {'precondition', old.v} end
end
if not old then
  local max_jobs = tonumber(redis.call('HGET', P .. 'tenant', 'max_jobs') or '0') or 0
  if max_jobs > 0 then
    local n = 0
    for _, c in ipairs(redis.call('HVALS', P .. 'job_counts')) do n = n + tonumber(c) end
    if n >= max_jobs then return {'exhausted', int(max_jobs)} end
  end
end
-- Checks done; writes.
local version, created = 1, ARGV[10]
if old then
  version = tonumber(old.v) + 1
  created = old.c
  job_count(old.s, -1)
  for dep in string.gmatch(old.d, '%S+') do redis.call('SREM', P .. 'deps:' .. dep, id) end
  redis.call('DEL', key)
end
local paused, state, next_fire = ARGV[6], ARGV[7], ARGV[8]
local fields = job_fields(state, int(version), created, next_fire, ARGV[11], ARGV[9], ARGV[5],
                          paused, ARGV[12], ARGV[4])
for i = 1, tonumber(ARGV[13]) do
  fields[#fields + 1] = 'l:' .. ARGV[12 + 2 * i]
  fields[#fields + 1] = ARGV[13 + 2 * i]
end
redis.call('HSET', key, unpack(fields))
if not old then cx_add('jobs', id) end
update_due(id, old, state, paused, next_fire)
job_count(state, 1)
for dep in string.gmatch(ARGV[12], '%S+') do redis.call('SADD', P .. 'deps:' .. dep, id) end
if old then
  job_event(id, ARGV[11], 'job.updated', state, int(version))
else
  job_event(id, ARGV[10], 'job.created', state, int(version))
end
return {'ok', job_reply(id)}
)lua";

inline constexpr char kDeleteJob[] = R"lua(
-- delete_job: DeleteJob.
-- KEYS: the prelude's.
-- ARGV[1] job id; ARGV[2] now ms; ARGV[3] kill_running "0"/"1".
-- Returns {"ok"} | {"not_found"}.
local id, now, kill = ARGV[1], ARGV[2], ARGV[3] == '1'
local key = P .. 'job:' .. id
local job = job_hash(key)
if not job then return {'not_found'} end
-- Checks done; writes.
local runs = {}
for _, rid in ipairs(redis.call('SMEMBERS', P .. 'active:' .. id)) do
  local r = hash(run_key(rid))
  if r then runs[#runs + 1] = r end
end
table.sort(runs, by_created)
for _, r in ipairs(runs) do
  if r.state ~= 'running' or kill then cancel(r, now, 'job deleted') end
end
redis.call('DEL', key)
cx_rem('jobs', id)
update_due(id, job, '', '', '')
job_count(job.s, -1)
for dep in string.gmatch(job.d, '%S+') do redis.call('SREM', P .. 'deps:' .. dep, id) end
job_event(id, now, 'job.deleted', job.s, job.v)
return {'ok'}
)lua";

inline constexpr char kFire[] = R"lua(
-- fire: Fire (one request; FireMany pipelines one call per request).
-- KEYS: the prelude's.
-- ARGV[1] job id; ARGV[2] expected version; ARGV[3] expected next_fire ms ("" = none);
-- ARGV[4] new next_fire ms ("" = none); ARGV[5] new state ("" = unchanged);
-- ARGV[6] new dependency_since ms ("" = unchanged); ARGV[7] time of the fire ms (stamps
-- cancellations and events); ARGV[8] number of runs, then each run as a record (a field count,
-- then field, value pairs); then the number of runs to cancel, then their ids.
-- A run whose id exists is left alone (counted in existed), unless the existing one was
-- cancelled before any attempt began and the new one is not terminal: then it is replaced.
-- Returns {"ok", created, existed} | {"not_found"} | {"precondition", version, next_fire}.
local id = ARGV[1]
local key = P .. 'job:' .. id
local job = job_hash(key)
if not job then return {'not_found'} end
if job.v ~= ARGV[2] or job.nf ~= ARGV[3] then return {'precondition', job.v, job.nf} end
local runs, i = {}, 9
for n = 1, tonumber(ARGV[8]) do runs[n], i = read_record(i) end
local cancels = {}
for n = 1, tonumber(ARGV[i]) do cancels[n] = ARGV[i + n] end
-- Checks done; writes.
local time = ARGV[7]
local state = ARGV[5] ~= '' and ARGV[5] or job.s
redis.call('HSET', key, 'nf', ARGV[4], 's', state)
if ARGV[6] ~= '' and ARGV[6] ~= job.ds then redis.call('HSET', key, 'ds', ARGV[6]) end
update_due(id, job, state, job.p, ARGV[4])
if state ~= job.s then
  job_count(job.s, -1)
  job_count(state, 1)
  job_event(id, time, 'job.updated', state, job.v)
end
-- An occurrence fired again after a pause or a delete of its job before its time. Its run
-- cancelled before any attempt began: the new run (queued, or skipped) takes the old one's id and
-- place (true). Its run running, asked to cancel (held by a node for its time), and the new one
-- queued: the request is withdrawn, and the node runs it if its handler has not begun (false:
-- the run existed).
local function fire_again(r)
  local old = fields(r.id, {'state', 'attempt', 'job', 'queue', 'started', 'finished', 'created',
                            'cancel', 'node'})
  if old and old.state == 'running' and old.cancel == '1' and not TERMINAL[r.state] then
    set(old, 'cancel', '')
    save(old)
    run_event(old, time, 'run.cancel_withdrawn', {'reason', '"fired again"'})
    return false
  end
  if not old or old.state ~= 'cancelled' or (tonumber(old.attempt) or 0) ~= 0 then return false end
  unindex(old)
  local m = lex(old.created, r.id)
  redis.call('ZREM', P .. 'runs:' .. old.job, m)
  redis.call('ZREM', P .. 'runs', m)
  redis.call('DEL', run_key(r.id))
  return insert_run(r)
end
local created, existed = 0, 0
for _, r in ipairs(runs) do
  if insert_run(r) or fire_again(r) then
    created = created + 1
  else
    existed = existed + 1
  end
end
for _, rid in ipairs(cancels) do
  local r = hash(run_key(rid))
  if r and r.job == id then cancel(r, time, 'replaced') end
end
return {'ok', created, existed}
)lua";

// ---- Runs -----------------------------------------------------------------------------------

inline constexpr char kEnqueue[] = R"lua(
-- enqueue: EnqueueRuns, all or nothing.
-- KEYS: the prelude's.
-- ARGV[1] job id; ARGV[2] number of runs, then each run as a record (a field count, then
-- field, value pairs).
-- Returns {"ok"} | {"not_found"} | {"exists", run id}.
local id = ARGV[1]
if redis.call('EXISTS', P .. 'job:' .. id) == 0 then return {'not_found'} end
local runs, i = {}, 3
for n = 1, tonumber(ARGV[2]) do runs[n], i = read_record(i) end
local seen = {}
for _, r in ipairs(runs) do
  if seen[r.id] or redis.call('EXISTS', run_key(r.id)) == 1 then return {'exists', r.id} end
  seen[r.id] = true
end
-- Checks done; writes.
defer()
for _, r in ipairs(runs) do insert_run(r) end
flush()
return {'ok'}
)lua";

inline constexpr char kClaim[] = R"lua(
-- claim: ClaimRuns within one tenant, or ("peek") the runs it would claim, without writing.
-- KEYS: the prelude's.
-- ARGV[1] mode "claim" | "peek"; ARGV[2] node; ARGV[3] now ms; ARGV[4] lease deadline ms;
-- ARGV[5] max runs; ARGV[6] horizon ms (claim runs available up to it; >= now); ARGV[7] after
-- ms (claim only runs available after it; "" = no bound); ARGV[8] number of queues, then the
-- queues (none = every queue).
-- Walks the priorities from 9 down; inside one, the ready entries with available_at <= horizon
-- of every queue, merged by (available_at, id). A claimed attempt starts at max(now, available). An exclusive run is passed over while a run of its
-- job runs; the tenant's max_concurrent_runs caps the claim, and its queue limits (tenant
-- fields ql:<queue>) cap each queue (running runs per queue: the counts hash).
-- Returns claim: the claimed runs (flat hashes), in claim order; peek: a flat list of run id,
-- ready score.
local peek = ARGV[1] == 'peek'
local node, now, deadline, max = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
-- The asked-for queues (or every queue) that have claimable runs at all: the walk below costs
-- one range read per priority and queue.
local queues, asked = {}, {}
if tonumber(ARGV[8]) == 0 then
  asked = redis.call('SMEMBERS', P .. 'queues')
else
  for i = 1, tonumber(ARGV[8]) do asked[i] = ARGV[8 + i] end
end
-- The highest priority with a ready entry (the bands above it are empty).
local top = -1
for _, name in ipairs(asked) do
  local first = redis.call('ZRANGE', P .. 'ready:' .. name, 0, 0, 'WITHSCORES')
  if first[1] then
    queues[#queues + 1] = name
    top = math.max(top, 9 - math.floor(tonumber(first[2]) / BAND))
  end
end
local slots = max
local quota = tonumber(redis.call('HGET', P .. 'tenant', 'max_concurrent_runs') or '0') or 0
if quota > 0 then slots = math.min(slots, quota - redis.call('ZCARD', P .. 'leases')) end
-- Free slots per limited queue (absent = unlimited).
local free = {}
for q, name in ipairs(queues) do
  local limit = tonumber(redis.call('HGET', P .. 'tenant', 'ql:' .. name) or '0') or 0
  if limit > 0 then
    free[q] = limit - (tonumber(redis.call('HGET', P .. 'counts', name .. '|running') or '0') or 0)
  end
end
local out, taken, jobs = {}, 0, {}
local horizon = tonumber(ARGV[6])
if horizon >= BAND then horizon = BAND - 1 end
-- The lowest available time claimed: after + 1 ms (scores are whole ms), or 0.
local from = ARGV[7] == '' and 0 or math.max(0, tonumber(ARGV[7]) + 1)
if slots <= 0 or #queues == 0 or horizon < from then return out end
defer()

-- Fencing tokens: a block of them is taken at the first claim (unused ones are left unused).
local fence_next, fence_last = 1, 0
local function take_fence()
  if fence_next > fence_last then
    fence_last = redis.call('INCRBY', KEYS[3], slots - taken)
    fence_next = fence_last - (slots - taken) + 1
  end
  fence_next = fence_next + 1
  return int(fence_next - 1)
end
local node_json = jstr(node)
-- Claims run r (the whole hash) whose earlier attempt is closed into `attempts` first: the
-- general state change (unindex, changes, index, save).
local function take_again(r)
  local fence = take_fence()
  unindex(r)
  close_attempt(r)
  local attempt = int(tonumber(r.attempt) + 1)
  local start = now
  if (tonumber(r.avail) or 0) > tonumber(now) then start = r.avail end
  set(r, 'state', 'running')
  set(r, 'attempt', attempt)
  set(r, 'fence', fence)
  set(r, 'node', node)
  set(r, 'lease', deadline)
  if not opt(r.started) then set(r, 'started', start) end
  set(r, 'a_num', attempt)
  set(r, 'a_node', node)
  set(r, 'a_fence', fence)
  set(r, 'a_start', start)
  set(r, 'a_end', '')
  set(r, 'a_outcome', 'running')
  set(r, 'a_error', '')
  index(r)
  save(r)
  run_event(r, now, nil, {'fence', fence})
  out[#out + 1] = redis.call('HGETALL', run_key(r.id))
end
-- Checks one candidate and, when it passes, claims it (every write of a claim is here, after
-- that run's checks; a run passed over writes nothing). The index changes are deferred. The
-- common case, a run's first claim, is written out in full here: the same changes as
-- take_again's, without its tables (the per-run cost of a claim is mostly Lua's own work).
local function take(id, score)
  local key = run_key(id)
  local v = redis.call('HMGET', key, 'state', 'excl', 'job', 'queue', 'attempt', 'avail',
                       'started', 'finished', 'a_num', 'a_end', 'a_error')
  local state, job = v[1], v[3]
  if not state or not CLAIMABLE[state] then return false end
  if v[2] == '1' and (jobs[job] or redis.call('SCARD', P .. 'running:' .. job) > 0) then
    return false
  end
  jobs[job] = true
  if peek then
    out[#out + 1] = id
    out[#out + 1] = int(tonumber(score))
    return true
  end
  if v[9] then
    take_again(hash(key))
    return true
  end
  local fence = take_fence()
  local queue, started, finished = v[4], v[7] or nil, v[8] or nil
  local attempt = int(tonumber(v[5]) + 1)
  local start = now
  if (tonumber(v[6]) or 0) > tonumber(now) then start = v[6] end
  local j = jk(job)
  zrem(ready_key(queue).ready, id)
  zrem(K_PENDING, id)
  zadd(K_LEASES, deadline, id)
  sadd(j.running, id)
  sadd(j.active, id)
  tally_of(queue, state, job, -1, duration_of(started, finished))
  local hs = {'state', 'running', 'attempt', attempt, 'fence', fence, 'node', node, 'lease',
              deadline, 'a_num', attempt, 'a_node', node, 'a_fence', fence, 'a_start', start,
              'a_outcome', 'running'}
  if not opt(started) then
    started = start
    hs[21], hs[22] = 'started', start
  end
  tally_of(queue, 'running', job, 1, duration_of(started, finished))
  redis.call('HSET', key, unpack(hs))
  if v[10] or v[11] then redis.call('HDEL', key, 'a_end', 'a_error') end
  emit(now, 'run.running', job, id, '{"state":"running","attempt":' .. attempt .. ',"node":' ..
       node_json .. ',"fence":' .. fence .. '}')
  out[#out + 1] = redis.call('HGETALL', key)
  return true
end

-- One queue: its range is in claim order already (equal scores by id); candidates are taken
-- as they come.
local function walk_one(lo, hi)
  local key, step = P .. 'ready:' .. queues[1], peek and 2 or 1
  local skip = 0
  while taken < slots and (free[1] == nil or free[1] > 0) do
    local want = slots - taken + 16
    local got = peek and redis.call('ZRANGEBYSCORE', key, lo, hi, 'WITHSCORES', 'LIMIT', skip, want)
                or redis.call('ZRANGEBYSCORE', key, lo, hi, 'LIMIT', skip, want)
    for j = 1, #got, step do
      if taken >= slots or (free[1] ~= nil and free[1] <= 0) then return end
      if take(got[j], peek and got[j + 1]) then
        taken = taken + 1
        if free[1] ~= nil then free[1] = free[1] - 1 end
      end
      -- Entries passed over, and those taken (their removal is deferred), stay in front.
      skip = skip + 1
    end
    if #got < want * step then return end
  end
end
-- Several queues: their ranges merged by (score, id).
local function walk_many(lo, hi)
  -- Entries passed over, and those taken (their removal is deferred), stay in front of a
  -- queue's range: skip them.
  local skip = {}
  for q = 1, #queues do skip[q] = 0 end
  local more = true
  while more and taken < slots do
    more = false
    local want = slots - taken + 16
    local cands = {}
    for q, name in ipairs(queues) do
      if free[q] == nil or free[q] > 0 then
        local got = redis.call('ZRANGEBYSCORE', P .. 'ready:' .. name, lo, hi, 'WITHSCORES',
                               'LIMIT', skip[q], want)
        local full = #got == 2 * want
        for j = 1, #got, 2 do
          cands[#cands + 1] = {id = got[j], s = tonumber(got[j + 1]), q = q,
                               last = full and j == #got - 1}
        end
      end
    end
    table.sort(cands, function(a, b)
      if a.s ~= b.s then return a.s < b.s end
      return a.id < b.id
    end)
    for _, c in ipairs(cands) do
      if taken >= slots then break end
      if free[c.q] ~= nil and free[c.q] <= 0 then
        -- The queue filled up in this claim: its remaining candidates wait.
      elseif take(c.id, c.s) then
        taken = taken + 1
        if free[c.q] ~= nil then free[c.q] = free[c.q] - 1 end
        skip[c.q] = skip[c.q] + 1
      else
        skip[c.q] = skip[c.q] + 1
      end
      -- Past the last fetched entry of a queue with more: fetch again to keep the merge exact.
      if c.last then
        more = true
        break
      end
    end
  end
end

for p = top, 0, -1 do
  if taken >= slots then break end
  local lo = (9 - p) * BAND
  if #queues == 1 then
    walk_one(lo + from, lo + horizon)
  else
    walk_many(lo + from, lo + horizon)
  end
end
flush()
return out
)lua";

inline constexpr char kRenew[] = R"lua(
-- renew: RenewLeases within one tenant.
-- KEYS: the prelude's.
-- ARGV[1] new lease deadline ms; then pairs of run id, fence.
-- Returns one integer per pair: 0 stale (not running, or another fence), 1 renewed, 2 renewed
-- but the run is asked to cancel.
local deadline = ARGV[1]
local out = {}
for i = 2, #ARGV, 2 do
  local key = run_key(ARGV[i])
  local f = redis.call('HMGET', key, 'state', 'fence', 'cancel')
  if f[1] == 'running' and f[2] == ARGV[i + 1] then
    redis.call('HSET', key, 'lease', deadline)
    redis.call('ZADD', K_LEASES, tonumber(deadline), ARGV[i])
    out[#out + 1] = f[3] == '1' and 2 or 1
  else
    out[#out + 1] = 0
  end
end
sync_leases()
return out
)lua";

inline constexpr char kComplete[] = R"lua(
-- complete: Complete and CompleteMany (a batch of one tenant's completions in one call).
-- KEYS: the prelude's.
-- ARGV[1] number of completions n; then n groups of 12: run id; fence; now ms; new state
-- (succeeded, failed, timed_out, cancelled or retry_wait); retry_at ms (retry_wait only);
-- attempt outcome; exit code ("" = none); http status ("" = none); output; error; when the
-- attempt really began ms ("" = as claimed, "-" = it never began: cancelled only); the whole
-- output's length ("" = the output is whole).
-- Returns one word per completion, in order: "ok" | "stale" (not running with that fence:
-- nothing recorded for it) | "cancel_withdrawn" (it never began, and its run's cancellation is
-- not requested while its job exists: nothing recorded, its holder runs it).
-- A completion of a run with no attempt recorded (not claimed by claim): the general state
-- change (unindex, changes, index, save).
local function complete_general(a)
  local r = fields(ARGV[a], {'state', 'fence', 'job', 'queue', 'started', 'finished', 'a_num',
                             'attempts', 'attempt', 'node', 'prio'})
  if not r or r.state ~= 'running' or r.fence ~= ARGV[a + 1] then return 'stale' end
  -- Checks done; writes.
  local now, state = ARGV[a + 2], ARGV[a + 3]
  unindex(r)
  if ARGV[a + 10] ~= '' and opt(r.a_num) then
    if not opt(r.attempts) then set(r, 'started', ARGV[a + 10]) end
    set(r, 'a_start', ARGV[a + 10])
  end
  end_attempt(r, now, ARGV[a + 5], ARGV[a + 9])
  set(r, 'exit', ARGV[a + 6])
  set(r, 'http', ARGV[a + 7])
  set(r, 'output', ARGV[a + 8])
  set(r, 'output_bytes', ARGV[a + 11])
  set(r, 'error', ARGV[a + 9])
  set(r, 'lease', '')
  set(r, 'state', state)
  local extra = {'outcome', jstr(ARGV[a + 5])}
  if state == 'retry_wait' then
    set(r, 'avail', ARGV[a + 4])
    extra[#extra + 1] = 'retry_at'
    extra[#extra + 1] = ARGV[a + 4]
  else
    set(r, 'finished', now)
  end
  if ARGV[a + 6] ~= '' then
    extra[#extra + 1] = 'exit_code'
    extra[#extra + 1] = ARGV[a + 6]
  end
  if ARGV[a + 7] ~= '' then
    extra[#extra + 1] = 'http_status'
    extra[#extra + 1] = ARGV[a + 7]
  end
  index(r)
  save(r)
  run_event(r, now, nil, extra)
  return 'ok'
end
-- A completion whose attempt never began: the run is cancelled without that attempt (the ones
-- before it stay; none: attempt 0 and no start, so Fire replaces it when its occurrence is fired
-- again), or refused.
local ATTEMPT_FIELDS = {'a_num', 'a_node', 'a_fence', 'a_start', 'a_end', 'a_outcome', 'a_error'}
local function complete_never_began(a)
  local r = fields(ARGV[a], {'state', 'fence', 'job', 'queue', 'started', 'finished', 'attempts',
                             'attempt', 'node', 'cancel'})
  if r.cancel ~= '1' and redis.call('EXISTS', P .. 'job:' .. r.job) == 1 then
    return 'cancel_withdrawn'
  end
  -- Checks done; writes.
  local now = ARGV[a + 2]
  unindex(r)
  for _, k in ipairs(ATTEMPT_FIELDS) do set(r, k, '') end
  set(r, 'attempt', tostring(math.max(0, (tonumber(r.attempt) or 1) - 1)))
  if not opt(r.attempts) then set(r, 'started', '') end
  set(r, 'error', ARGV[a + 9])
  set(r, 'lease', '')
  set(r, 'state', 'cancelled')
  set(r, 'finished', now)
  index(r)
  save(r)
  run_event(r, now, nil, {'outcome', '"cancelled"'})
  return 'ok'
end
-- Field k to set to x (hs: HSET arguments), or, when x is empty, to delete (hd: HDEL's).
local function put(hs, hd, k, x)
  if x == '' then
    hd[#hd + 1] = k
  else
    hs[#hs + 1] = k
    hs[#hs + 1] = x
  end
end
local node_json = {}
-- The common case, a run with its attempt recorded, written out in full: the same changes as
-- complete_general's, without its tables (the per-run cost is mostly Lua's own work).
local function complete(a)
  local id = ARGV[a]
  local key = run_key(id)
  local v = redis.call('HMGET', key, 'state', 'fence', 'job', 'queue', 'started', 'finished',
                       'a_num', 'attempts', 'attempt', 'node', 'prio')
  if v[1] ~= 'running' or v[2] ~= ARGV[a + 1] then return 'stale' end
  if ARGV[a + 10] == '-' then return complete_never_began(a) end
  if not v[7] then return complete_general(a) end
  -- Checks done; writes.
  local job, queue, started, finished, attempt = v[3], v[4], v[5] or nil, v[6] or nil, v[9]
  local node = v[10] or ''
  local now, state, outcome, err = ARGV[a + 2], ARGV[a + 3], ARGV[a + 5], ARGV[a + 9]
  local exit, http, began = ARGV[a + 6], ARGV[a + 7], ARGV[a + 10]
  local j = jk(job)
  zrem(K_LEASES, id)
  srem(j.running, id)
  tally_of(queue, 'running', job, -1, duration_of(started, finished))
  local hs, hd = {'state', state, 'a_end', now, 'a_outcome', outcome}, {'lease'}
  if began ~= '' then
    if not opt(v[8]) then
      started = began
      put(hs, hd, 'started', began)
    end
    put(hs, hd, 'a_start', began)
  end
  put(hs, hd, 'a_error', err)
  put(hs, hd, 'exit', exit)
  put(hs, hd, 'http', http)
  put(hs, hd, 'output', ARGV[a + 8])
  put(hs, hd, 'output_bytes', ARGV[a + 11])
  put(hs, hd, 'error', err)
  local nj = node_json[node]
  if not nj then
    nj = jstr(node)
    node_json[node] = nj
  end
  local data = '{"state":"' .. state .. '","attempt":' .. attempt .. ',"node":' .. nj ..
               ',"outcome":' .. jstr(outcome)
  if state == 'retry_wait' then
    local avail = ARGV[a + 4]
    put(hs, hd, 'avail', avail)
    data = data .. ',"retry_at":' .. avail
    zadd(ready_key(queue).ready, ready_score_of(v[11], avail), id)
    zadd(K_PENDING, avail, id)
    sadd(j.active, id)
    sadd(K_QUEUES, queue)
  else
    finished = now
    put(hs, hd, 'finished', now)
    srem(j.active, id)
    if FINISHED[state] then zadd(j.finished, now, id) end
  end
  if exit ~= '' then data = data .. ',"exit_code":' .. exit end
  if http ~= '' then data = data .. ',"http_status":' .. http end
  tally_of(queue, state, job, 1, duration_of(started, finished))
  redis.call('HSET', key, unpack(hs))
  redis.call('HDEL', key, unpack(hd))
  emit(now, 'run.' .. state, job, id, data .. '}')
  return 'ok'
end
local out = {}
defer()
for k = 0, tonumber(ARGV[1]) - 1 do out[#out + 1] = complete(2 + 12 * k) end
flush()
return out
)lua";

inline constexpr char kSyncIndexes[] = R"lua(
-- sync_indexes: the tenant's entries in the store-wide indexes made to agree with its own: the
-- ready index (KEYS[4]) with its pending index, the due index (KEYS[5]) with its due index, the
-- leases index (KEYS[6]) with its leases (building them in a store of an older key layout).
-- KEYS: the prelude's. Returns 1.
sync_ready()
sync_due()
sync_leases()
return 1
)lua";

inline constexpr char kCancelRun[] = R"lua(
-- cancel_run: CancelRun.
-- KEYS: the prelude's.
-- ARGV[1] run id; ARGV[2] now ms.
-- Returns {"ok"} | {"not_found"} | {"ended", state}.
local r = hash(run_key(ARGV[1]))
if not r then return {'not_found'} end
if TERMINAL[r.state] then return {'ended', r.state} end
cancel(r, ARGV[2], 'cancelled')
return {'ok'}
)lua";

inline constexpr char kRecover[] = R"lua(
-- recover: RecoverLostRuns within one tenant.
-- KEYS: the prelude's.
-- ARGV[1] now ms; ARGV[2] node ("" = every run whose lease deadline < now; else every running
-- run of that node); ARGV[3] max leases lost; ARGV[4] limit.
-- Each run's attempt ends as lease_lost; the run is queued again (available now), or fails once
-- it lost more than max leases, or ends cancelled when its cancellation was asked for.
-- Returns the recovered runs (flat hashes) as they are afterwards, by lease deadline.
local now, node, max_lost, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ids
if node == '' then
  ids = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', '(' .. now, 'LIMIT', 0, limit)
else
  -- O(running runs of the tenant): a node restart is rare.
  ids = {}
  for _, id in ipairs(redis.call('ZRANGE', P .. 'leases', 0, -1)) do
    if #ids >= limit then break end
    if redis.call('HGET', run_key(id), 'node') == node then ids[#ids + 1] = id end
  end
end
local why = node == '' and 'lease expired' or ('handed back by node ' .. node .. ' (stopped or restarted)')
local out = {}
for _, id in ipairs(ids) do
  local r = hash(run_key(id))
  if r and r.state == 'running' then
    unindex(r)
    if opt(r.a_num) then end_attempt(r, now, 'lease_lost', why) end
    local lost = (tonumber(r.lost) or 0) + 1
    set(r, 'lost', int(lost))
    set(r, 'lease', '')
    local next_state = 'queued'
    if lost > max_lost then
      next_state = 'failed'
    elseif r.cancel == '1' then
      next_state = 'cancelled'
    end
    set(r, 'state', next_state)
    if next_state == 'queued' then
      set(r, 'avail', now)
    else
      set(r, 'finished', now)
      if next_state == 'failed' then set(r, 'error', 'lease lost ' .. int(lost) .. ' times') end
    end
    index(r)
    save(r)
    run_event(r, now, 'run.lease_lost', {'leases_lost', int(lost)})
    if next_state ~= 'queued' then run_event(r, now, nil, {'error', jstr(r.error or '')}) end
    out[#out + 1] = redis.call('HGETALL', run_key(id))
  end
end
return out
)lua";

inline constexpr char kPruneJob[] = R"lua(
-- prune_job: PruneRuns for one job's history, oldest first, a bounded part per call.
-- KEYS: the prelude's.
-- ARGV[1] job id; ARGV[2] older_than ms; ARGV[3] runs to keep (the newest); ARGV[4] runs at the
-- old end to pass over (those kept by the earlier calls of this pass); ARGV[5] at most this many
-- runs looked at.
-- Deletes the terminal runs finished before older_than that are not among the newest kept. The
-- history is in creation order and a run finishes after it is created, so the walk ends at the
-- first run created at or after older_than: a pass reads the old runs, never the young ones (a
-- busy job's week of history is not read every minute).
-- Returns {deleted, kept (passed over), more (1: call again, passing over kept more)}.
local job, older, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local skip, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local idx = P .. 'runs:' .. job
local old = redis.call('ZCARD', idx) - keep - skip
local deleted, kept, more = 0, 0, 0
if old > 0 then
  local n = math.min(old, limit)
  local members = redis.call('ZRANGEBYLEX', idx, '-', '+', 'LIMIT', skip, n)
  more = old > n and 1 or 0
  for _, m in ipairs(members) do
    if tonumber(string.sub(m, 1, 16)) >= older then
      more = 0  -- this run and every later one are young
      break
    end
    local id = string.sub(m, 18)
    local r = fields(id, {'state', 'job', 'queue', 'started', 'finished'})
    if not r then
      redis.call('ZREM', idx, m)
      redis.call('ZREM', P .. 'runs', m)
    elseif TERMINAL[r.state] and opt(r.finished) and tonumber(r.finished) < older then
      unindex(r)
      redis.call('DEL', run_key(id))
      redis.call('ZREM', idx, m)
      redis.call('ZREM', P .. 'runs', m)
      deleted = deleted + 1
    else
      kept = kept + 1
    end
  end
end
if redis.call('ZCARD', idx) == 0 then redis.call('SREM', P .. 'runjobs', job) end
return {deleted, kept, more}
)lua";

// ---- Reads ----------------------------------------------------------------------------------

inline constexpr char kListJobs[] = R"lua(
-- list_jobs: one page of ListJobs (read only).
-- KEYS: the prelude's.
-- ARGV[1] cursor: the last id of the previous page ("" = from the start); ARGV[2] limit;
-- ARGV[3] queue ("" = any); ARGV[4] state ("" = any); ARGV[5] label key ("" = any);
-- ARGV[6] label value; ARGV[7] scan budget (jobs examined at most).
-- Returns {jobs, resume}: up to limit + 1 matching jobs (flat, as job_reply) in id order, and
-- the last id examined if the budget ran out before ("" otherwise).
local limit, budget = tonumber(ARGV[2]), tonumber(ARGV[7])
local queue, state, lkey, lval = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local out, scanned, resume = {}, 0, ''
cx_each('jobs', ARGV[1], false, function(id)
  local f = redis.call('HMGET', P .. 'job:' .. id, 's', 'q', 'l:' .. lkey)
  if f[1] and (queue == '' or (f[2] or 'default') == queue) and (state == '' or f[1] == state) and
      (lkey == '' or f[3] == lval) then
    out[#out + 1] = job_reply(id)
    if #out > limit then return false end
  end
  scanned = scanned + 1
  if scanned >= budget then
    resume = id
    return false
  end
end)
return {out, resume}
)lua";

inline constexpr char kListRuns[] = R"lua(
-- list_runs: one page of ListRuns (read only).
-- KEYS: the prelude's.
-- ARGV[1] index after the tenant prefix: "runs" (the tenant's) or "runs:<job id>";
-- ARGV[2] cursor: the index member of the last run of the previous page ("" = the newest);
-- ARGV[3] limit; ARGV[4] state ("" = any); ARGV[5] scan budget (runs examined at most);
-- ARGV[6] output tail: > 0, an output longer than that many bytes is replaced by its last that
-- many bytes from a UTF-8 character's start, and the field output_bytes (the whole length) is
-- added unless the run has it (a longer output than the one stored).
-- Returns {runs, resume}: up to limit + 1 matching runs (flat hashes), newest first, and the
-- last index member examined if the budget ran out before ("" otherwise).
local idx = P .. ARGV[1]
local limit, state, budget = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local tail = tonumber(ARGV[6]) or 0
local max = ARGV[2] == '' and '+' or '(' .. ARGV[2]
local out, scanned = {}, 0
while true do
  local ms = redis.call('ZREVRANGEBYLEX', idx, max, '-', 'LIMIT', 0, 128)
  if #ms == 0 then return {out, ''} end
  for _, m in ipairs(ms) do
    local key = run_key(string.sub(m, 18))
    if state == '' or redis.call('HGET', key, 'state') == state then
      local h = redis.call('HGETALL', key)
      if #h > 0 then
        if tail > 0 then
          local at, whole
          for i = 1, #h, 2 do
            if h[i] == 'output' then at = i + 1 elseif h[i] == 'output_bytes' then whole = true end
          end
          if at and #h[at] > tail then
            if not whole then h[#h + 1], h[#h + 2] = 'output_bytes', int(#h[at]) end
            h[at] = string.gsub(string.sub(h[at], -tail), '^[\128-\191]+', '')
          end
        end
        out[#out + 1] = h
        if #out > limit then return {out, ''} end
      end
    end
    scanned = scanned + 1
    if scanned >= budget then return {out, m} end
  end
  max = '(' .. ms[#ms]
end
)lua";

inline constexpr char kReadIndex[] = R"lua(
-- read_index: the records an index names (read only): Dependents, ActiveRuns,
-- FinishedRunsSince.
-- KEYS: the prelude's.
-- ARGV[1] kind: "set" (every member) or "zrange" (members scored in [ARGV[4], ARGV[5]],
-- ZRANGEBYSCORE syntax, at most ARGV[6]; -1 = all); ARGV[2] the index key after the tenant
-- prefix ("deps:<id>", "active:<id>", "finished:<id>"); ARGV[3] the record key after the
-- tenant prefix, without the id ("job:" or "run:").
-- Returns the records (flat hashes; jobs as job_reply) in index order; members whose record is
-- gone are left out.
local idx = P .. ARGV[2]
local ids
if ARGV[1] == 'set' then
  ids = redis.call('SMEMBERS', idx)
else
  ids = redis.call('ZRANGEBYSCORE', idx, ARGV[4], ARGV[5], 'LIMIT', 0, tonumber(ARGV[6]))
end
local out = {}
for _, id in ipairs(ids) do
  local h = ARGV[3] == 'job:' and job_reply(id) or redis.call('HGETALL', P .. ARGV[3] .. id)
  if #h > 0 then out[#out + 1] = h end
end
return out
)lua";

inline constexpr char kDue[] = R"lua(
-- due: DueJobs of one tenant (read only), run only in tenants whose first due time has come
-- (the store-wide due index, KEYS[5]; NextFireTime reads that index alone).
-- KEYS: the prelude's.
-- ARGV[1] now ms, ARGV[2] limit. Returns the jobs (flat, as job_reply) whose next fire is <= now,
-- by (next fire, id), at most limit.
local out = {}
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit <= 0 then return out end
cx_each('due', '', true, function(m)
  if tonumber(string.sub(m, 1, 16)) > now then return false end
  local h = job_reply(string.sub(m, 18))
  if #h > 0 then out[#out + 1] = h end
  return #out < limit
end)
return out
)lua";

// ---- Events and tenants ---------------------------------------------------------------------

inline constexpr char kAppendEvent[] = R"lua(
-- append_event: AppendEvent.
-- KEYS: the prelude's.
-- ARGV[1] time ms; ARGV[2] type; ARGV[3] job id; ARGV[4] run id; ARGV[5] data (JSON text).
-- Returns the event's seq.
return emit(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
)lua";

inline constexpr char kPutTenant[] = R"lua(
-- put_tenant: PutTenant's record, in the tenant's slot (where the quotas are enforced).
-- KEYS: the prelude's.
-- ARGV[1] id; ARGV[2] max_jobs; ARGV[3] max_concurrent_runs; ARGV[4] created_at ms (kept when
-- the record exists); ARGV[5] updated_at ms; then queue, limit pairs (the queue limits; they
-- replace the previous ones).
-- Returns "ok".
local key = P .. 'tenant'
local created = redis.call('HGET', key, 'created') or ARGV[4]
redis.call('DEL', key)
local fields = {'id', ARGV[1], 'max_jobs', ARGV[2], 'max_concurrent_runs', ARGV[3],
                'created', created, 'updated', ARGV[5]}
for i = 6, #ARGV, 2 do
  fields[#fields + 1] = 'ql:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', key, unpack(fields))
sync_ready()  -- the quota may open or close the tenant to claims
return 'ok'
)lua";

// ---- Layouts --------------------------------------------------------------------------------

inline constexpr char kMigrateJobs[] = R"lua(
-- migrate_jobs: moves a batch of one tenant's jobs from key layout 1 to this one (see
-- CheckLayout in redis_store.cc); the first call moves the tenant's old `jobs` index aside.
-- Layout 1 had job hashes of long field names (id queue paused version state next_fire
-- dep_since created updated deps, the spec in spec spec2 ..., l:<label>) and `jobs` (ids) and
-- `due` (id -> next fire ms) as plain sorted sets. Runs and everything else are unchanged.
-- P layout holds "1" while the tenant's jobs move and "2" once they have.
-- KEYS: the prelude's. ARGV[1] batch size.
-- Returns the number of jobs left to move (0: the tenant is done).
local old = P .. 'jobs.v1'
local mark = redis.call('GET', P .. 'layout')
if mark == '2' then return 0 end
if not mark then
  if redis.call('EXISTS', P .. 'jobs') == 1 then redis.call('RENAME', P .. 'jobs', old) end
  redis.call('DEL', P .. 'due')
  redis.call('SET', P .. 'layout', '1')
end
local popped = redis.call('ZPOPMIN', old, tonumber(ARGV[1]))
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = P .. 'job:' .. id
  local h = hash(key)
  if h and not h.s then
    local spec = h.spec or ''
    for n = 2, 1000 do
      local piece = h['spec' .. n]
      if not piece then break end
      spec = spec .. piece
    end
    -- The spec keeps its id (the reader takes the key's).
    local fields = job_fields(h.state, h.version, h.created, h.next_fire or '', h.updated,
                              h.dep_since, h.queue, h.paused, h.deps, spec)
    for k, v in pairs(h) do
      if string.sub(k, 1, 2) == 'l:' then
        fields[#fields + 1] = k
        fields[#fields + 1] = v
      end
    end
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(fields))
  end
  local j = job_hash(key)
  if j then
    cx_add('jobs', id)
    update_due(id, nil, j.s, j.p, j.nf)
  end
end
local left = redis.call('ZCARD', old)
if left == 0 then redis.call('SET', P .. 'layout', '2') end
return left
)lua";

// ---- Store-wide (no prelude) ----------------------------------------------------------------

inline constexpr char kPutApiKey[] = R"lua(
-- put_api_key: PutApiKey.
-- KEYS[1] "<prefix>:{sys}:keys" (hash key id -> secret hash);
-- KEYS[2] "<prefix>:{sys}:key:<secret hash>" (the record).
-- ARGV[1] id; ARGV[2] secret hash; ARGV[3] tenant; ARGV[4] role; ARGV[5] allow_shell "0"/"1";
-- ARGV[6] name; ARGV[7] created_at ms.
-- Returns 1 when stored, 0 when the id or the hash exists (nothing written).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'tenant', ARGV[3], 'role', ARGV[4],
           'shell', ARGV[5], 'name', ARGV[6], 'created', ARGV[7])
return 1
)lua";

inline constexpr char kDeleteApiKey[] = R"lua(
-- delete_api_key: DeleteApiKey.
-- KEYS[1] "<prefix>:{sys}:keys" (hash key id -> secret hash).
-- ARGV[1] id; ARGV[2] "<prefix>:{sys}:key:" (the record's key without the hash; same slot).
-- Returns 1 when deleted, 0 when absent, -1 when it is the last admin key (kept).
local hash = redis.call('HGET', KEYS[1], ARGV[1])
if not hash then return 0 end
if redis.call('HGET', ARGV[2] .. hash, 'role') == 'admin' then
  local admins = 0
  for _, h in ipairs(redis.call('HVALS', KEYS[1])) do
    if redis.call('HGET', ARGV[2] .. h, 'role') == 'admin' then admins = admins + 1 end
  end
  if admins <= 1 then return -1 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', ARGV[2] .. hash)
return 1
)lua";

// ---- Cluster (no prelude) -------------------------------------------------------------------

inline constexpr char kAcquireLeader[] = R"lua(
-- acquire_leader: AcquireLeadership.
-- KEYS[1] "<prefix>:{sys}:leader" (hash node, epoch, expires ms; never deleted, so the epoch
-- only grows).
-- ARGV[1] node id; ARGV[2] now ms (the cluster time base); ARGV[3] ttl ms.
-- Returns {holder, epoch, expires ms} after the call: the caller if the lease was free, expired
-- (epoch + 1) or its own (renewed, same epoch); else the other holder's, unchanged.
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'expires')
local holder, epoch, expires = cur[1], tonumber(cur[2] or '0'), tonumber(cur[3] or '0')
if holder and holder ~= ARGV[1] and expires > now then return {holder, epoch, expires} end
if not (holder == ARGV[1] and expires > now) then epoch = epoch + 1 end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'epoch', epoch, 'expires', now + ttl)
return {ARGV[1], epoch, now + ttl}
)lua";

inline constexpr char kReleaseLeader[] = R"lua(
-- release_leader: ReleaseLeadership.
-- KEYS[1] "<prefix>:{sys}:leader". ARGV[1] node id; ARGV[2] epoch.
-- Returns 1 when released (expires set to 0), 0 when the lease is someone else's.
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'expires', 0)
return 1
)lua";

inline constexpr char kPutAssignment[] = R"lua(
-- put_assignment: PutAssignment.
-- KEYS[1] "<prefix>:{sys}:leader"; KEYS[2] "<prefix>:{sys}:assign" (hash epoch, owners JSON,
-- updated ms).
-- ARGV[1] node id; ARGV[2] epoch; ARGV[3] now ms; ARGV[4] owners (JSON object tenant -> node).
-- Returns 1 when written, 0 when the caller does not hold the unexpired lease of that epoch.
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'expires')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] or tonumber(cur[3] or '0') <= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'owners', ARGV[4], 'updated', ARGV[3])
return 1
)lua";

}  // namespace jobsched::redis_scripts
