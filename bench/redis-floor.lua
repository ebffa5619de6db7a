-- The least Redis work per run of a fenced claim and its completion, in one script, so that no
-- network or request parsing is counted (see bench/redis-floor). Per run: the claim reads the run
-- (the node needs it), writes its state, attempt, fencing token, node, lease and start, adds it to
-- the lease index and appends a run.running event; the completion reads the state and token,
-- writes the outcome, takes the run off the lease index and appends a run.succeeded event. Runs
-- are popped from one ready index 10 at a time, with one block of fencing tokens and event
-- numbers per 10. Nothing else: no counters, no per-job indexes, no priorities, no retries.
-- KEYS[1]: a key prefix of its own (its keys are deleted at the end).
-- ARGV[1]: runs (a multiple of 10).
-- Returns the microseconds spent per run, as a string.
local P, N = KEYS[1], tonumber(ARGV[1])
for i = 1, N do
  local id = 'bench-noop@' .. i
  redis.call('HSET', P .. 'run:' .. id, 'id', id, 'job', 'bench-noop', 'tenant', 'default',
             'queue', 'default', 'state', 'queued', 'attempt', '0', 'max_att', '1',
             'created', '1700000000000', 'sched', '1700000000000', 'avail', '1700000000000',
             'reason', 'manual', 'payload', '{"i":' .. i .. '}')
  redis.call('ZADD', P .. 'ready', i, id)
end
local t0 = redis.call('TIME')
for _ = 1, N / 10 do
  local popped = redis.call('ZPOPMIN', P .. 'ready', 10)
  local fence = redis.call('INCRBY', P .. 'fence', 10) - 10
  local seq = redis.call('INCRBY', P .. 'seq', 20) - 20
  local claimed = {}
  for j = 1, #popped, 2 do
    local id, key = popped[j], P .. 'run:' .. popped[j]
    fence, seq = fence + 1, seq + 1
    claimed[#claimed + 1] = redis.call('HGETALL', key)
    redis.call('HSET', key, 'state', 'running', 'attempt', '1', 'fence', fence, 'node', 'n1',
               'lease', '1700000015000', 'started', '1700000000000')
    redis.call('ZADD', P .. 'leases', 1700000015000, id)
    redis.call('XADD', P .. 'events', 'MAXLEN', '~', '100000', seq .. '-0', 'type', 'run.running',
               'run', id, 'data', '{"attempt":1,"fence":' .. fence .. '}')
  end
  for j = 1, #popped, 2 do
    local id, key = popped[j], P .. 'run:' .. popped[j]
    local f = redis.call('HMGET', key, 'state', 'fence')
    if f[1] == 'running' then
      seq = seq + 1
      redis.call('HSET', key, 'state', 'succeeded', 'finished', '1700000000001')
      redis.call('ZREM', P .. 'leases', id)
      redis.call('XADD', P .. 'events', 'MAXLEN', '~', '100000', seq .. '-0', 'type',
                 'run.succeeded', 'run', id, 'data', '{"attempt":1}')
    end
  end
end
local t1 = redis.call('TIME')
for i = 1, N do redis.call('DEL', P .. 'run:bench-noop@' .. i) end
redis.call('DEL', P .. 'ready', P .. 'leases', P .. 'events', P .. 'fence', P .. 'seq')
return tostring(((t1[1] - t0[1]) * 1e6 + (t1[2] - t0[2])) / N)
