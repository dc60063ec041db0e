#!lua name=markov_leases
--[[
Leases on numbered resources (event-log partitions, gateway shards), shared by the live members of a group: a member registers
with a heartbeat, and each resource is held by at most one member at a time, with a fencing epoch that grows with
every new holder. Keys: '<group>:members' (sorted set, member -> expiry in ms of the server's clock),
'<group>:lease:{<n>}' (string 'member epoch', with a TTL) and '<group>:epoch:{<n>}' (the last epoch given), the
last two in one slot. See docs/event-log.md.
]]

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- lease_heartbeat(members; member, ttl_ms) -> live members, sorted. A ttl of 0 leaves the group.
local function heartbeat(keys, args)
    local now = now_ms()
    local ttl = tonumber(args[2])
    if ttl > 0 then
        redis.call('ZADD', keys[1], now + ttl, args[1])
    else
        redis.call('ZREM', keys[1], args[1])
    end
    redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', now)
    return redis.call('ZRANGE', keys[1], 0, -1)
end

-- lease_acquire(lease, epoch; member, ttl_ms) -> the new epoch, or {holder} when the lease is held.
local function acquire(keys, args)
    local holder = redis.call('GET', keys[1])
    if holder then return { holder } end
    local epoch = redis.call('INCR', keys[2])
    redis.call('SET', keys[1], args[1] .. ' ' .. epoch, 'PX', args[2])
    return epoch
end

-- lease_renew(lease; member, epoch, ttl_ms) -> 1 when still held by member at epoch (and extended), else 0.
local function renew(keys, args)
    if redis.call('GET', keys[1]) ~= args[1] .. ' ' .. args[2] then return 0 end
    redis.call('PEXPIRE', keys[1], args[3])
    return 1
end

-- lease_release(lease; member, epoch) -> 1 when it was held by member at epoch (and is now free), else 0.
local function release(keys, args)
    if redis.call('GET', keys[1]) ~= args[1] .. ' ' .. args[2] then return 0 end
    redis.call('DEL', keys[1])
    return 1
end

-- consumers_prune(stream; idle_ms) -> names removed: the consumers of every group of the stream that hold no pending
-- entry and have been idle for idle_ms, so that departed members (their pending entries claimed by others) do not
-- stay listed for ever. Atomic: a consumer that reads meanwhile is not removed with entries in hand. A live consumer
-- that was only idle comes back with its next read.
local function prune(keys, args)
    local idle = tonumber(args[1])
    local removed = {}
    if redis.call('EXISTS', keys[1]) == 0 then return removed end
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', keys[1])) do
        local name
        for i = 1, #group, 2 do if group[i] == 'name' then name = group[i + 1] end end
        for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', keys[1], name)) do
            local fields = {}
            for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
            if fields['pending'] == 0 and fields['idle'] >= idle then
                redis.call('XGROUP', 'DELCONSUMER', keys[1], name, fields['name'])
                table.insert(removed, name .. ' ' .. fields['name'])
            end
        end
    end
    return removed
end

-- lease_fenced_hset(lease, hash; member, epoch, field, value, ...) -> 1 when the lease is held by member at epoch
-- and the fields were written, else 0 (nothing written): a holder that lost its lease (paused past it, say) can
-- never write what the lease guards. The hash must be in the lease's slot.
local function fenced_hset(keys, args)
    if redis.call('GET', keys[1]) ~= args[1] .. ' ' .. args[2] then return 0 end
    redis.call('HSET', keys[2], unpack(args, 3))
    return 1
end

redis.register_function('consumers_prune', prune)
redis.register_function('lease_fenced_hset', fenced_hset)
redis.register_function('lease_heartbeat', heartbeat)
redis.register_function('lease_acquire', acquire)
redis.register_function('lease_renew', renew)
redis.register_function('lease_release', release)
