#!lua name=markov_v1_fixture
--[[ TEST FIXTURE: the chain library as it was before layout 2 (the trainers' own computation), loaded under other
names so that tests can write guilds the way the earlier version did and check that they are upgraded. ]]
--[[
The chain store, as Redis Functions. Every function works on ONE guild: KEYS[1] is the guild's meta key
'{g:<id>}:meta', and every other key it touches starts with the same '{g:<id>}' hash tag, so a guild lives in
one cluster slot and each call is atomic. See docs/chain-store.md for the layout and the reasons.

Tokens never contain whitespace (the tokenizer splits on it), so:
  - a state is its tokens joined by ' ', the start padding being empty tokens ('' … '');
  - the end of a message is the empty token '' as a successor;
  - a small state's successors are stored as 'count\ttoken\ncount\ttoken…'.
]]

local SPLIT_LOAD = 48      -- states per bucket before the bucket table grows by one bucket (linear hashing)
local BIG_VALUE = 48       -- encoded successors longer than this move a state to keys of its own
local BIG_NAME = 40        -- so do state names longer than this (keeps bucket hashes in listpack encoding)
local MIN_PENDING = 16     -- a big state's pending increments before a rebuild is considered

-- Keys -------------------------------------------------------------------------------------------------------

local function prefix_of(meta_key)
    return string.sub(meta_key, 1, #meta_key - 5) -- strip ':meta'
end

-- Linear hashing over bucket hashes '{g}:c:<n>' ---------------------------------------------------------------

local function state_hash(state)
    return tonumber(string.sub(redis.sha1hex(state), 1, 8), 16)
end

local function load_table(meta)
    local v = redis.call('HMGET', meta, 'L', 'p')
    return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end

local function bucket_of(h, L, p)
    local size = 2 ^ L
    local b = h % size
    if b < p then b = h % (size * 2) end
    return b
end

-- ':c:<n>' for the first 2^16 bucket numbers, made once: formatting a number is as dear as a Redis command here.
local bucket_suffixes = {}

-- The key of the bucket that holds a state of hash h.
local function bucket_key(P, h, L, p)
    local b = bucket_of(h, L, p)
    local suffix = bucket_suffixes[b]
    if not suffix then
        suffix = ':c:' .. b
        if b < 65536 then bucket_suffixes[b] = suffix end
    end
    return P .. suffix
end

-- Successor lists of small states -----------------------------------------------------------------------------

local function decode_small(v)
    -- Plain string.find, not gmatch: this runs for every state a call touches.
    local toks, counts = {}, {}
    local pos = 1
    while true do
        local tab = string.find(v, '\t', pos, true)
        if not tab then break end
        counts[#counts + 1] = tonumber(string.sub(v, pos, tab - 1))
        local stop = string.find(v, '\n', tab + 1, true)
        if stop then
            toks[#toks + 1] = string.sub(v, tab + 1, stop - 1)
            pos = stop + 1
        else
            toks[#toks + 1] = string.sub(v, tab + 1)
            break
        end
    end
    return toks, counts
end

local function encode_small(toks, counts)
    local parts = {}
    for i = 1, #toks do
        if counts[i] > 0 then parts[#parts + 1] = counts[i] .. '\t' .. toks[i] end
    end
    return table.concat(parts, '\n')
end

-- Alias tables (Vose, exact integer thresholds) -----------------------------------------------------------------
-- Blob layout (little endian): T u32 | n u32 | n columns of 20 bytes | token bytes. Column i is
-- (threshold, start of token i, start of its alias's token, length of token i, length of the alias's), each u32,
-- starts relative to the token bytes at 8 + 20n: a draw reads one column, then one token.
-- Column i is drawn uniformly, u uniformly in [0, T): u < threshold[i] picks i, otherwise alias[i].
-- P(token j) = (threshold[j] + Σ_{alias[i]=j} (T - threshold[i])) / (n·T) = count[j] / T exactly.

local function build_alias(toks, counts)
    local n = #toks
    local T = 0
    for i = 1, n do T = T + counts[i] end
    local w, small, large = {}, {}, {}
    for i = 1, n do
        w[i] = counts[i] * n
        if w[i] < T then small[#small + 1] = i else large[#large + 1] = i end
    end
    local thr, alias = {}, {}
    while #small > 0 and #large > 0 do
        local s = table.remove(small)
        local l = large[#large]
        thr[s] = w[s]
        alias[s] = l
        w[l] = w[l] - (T - w[s])
        if w[l] < T then
            table.remove(large)
            small[#small + 1] = l
        end
    end
    for _, i in ipairs(large) do thr[i] = T; alias[i] = i end
    for _, i in ipairs(small) do thr[i] = T; alias[i] = i end -- unreachable with exact integers; kept for safety
    local starts, off = {}, 0
    for i = 1, n do
        starts[i] = off
        off = off + #toks[i]
    end
    local cols = {}
    for i = 1, n do
        local a = alias[i]
        cols[i] = struct.pack('<I4I4I4I4I4', thr[i], starts[i], starts[a], #toks[i], #toks[a])
    end
    return struct.pack('<I4I4', T, n) .. table.concat(cols) .. table.concat(toks), T
end

-- Random numbers: L'Ecuyer's combined multiplicative generator, exact in Lua's doubles, seeded by the caller
-- so a sentence can be replayed.

local rng1, rng2 = 1, 1

local function seed_rng(a, b)
    rng1 = (tonumber(a) or 1) % 2147483562 + 1
    rng2 = (tonumber(b) or 1) % 2147483398 + 1
end

local function next_raw()
    rng1 = (40014 * rng1) % 2147483563
    rng2 = (40692 * rng2) % 2147483399
    local z = rng1 - rng2
    if z < 1 then z = z + 2147483562 end
    return z - 1 -- uniform in [0, 2147483561]
end

-- Uniform integer in [0, n), exactly (rejection removes modulo bias), for n up to 2^31.
local function rand_below(n)
    local range = 2147483562
    local limit = range - (range % n)
    while true do
        local z = next_raw()
        if z < limit then return z % n end
    end
end

-- Big states: '{g}:s:<state>' counts (the truth), '{g}:a:<state>' alias blob built from the counts at some
-- moment, '{g}:p:<state>' list of increments since (one element per unit), '{g}:n:<state>' decrements since.
-- The bucket field of a big state holds its header instead of successors: '#' and five u32 LE (blob total, blob
-- columns, pending increments, pending decrements, live successors), so one HGET tells the sampler everything
-- it needs and one struct.unpack reads it (markov_state shows it decoded). Sampling draws from blob ∪ list in
-- proportion to T and P and accepts token t with probability count[t] / (count[t] + decrements[t]): exactly
-- count[t] / Σcount, at all times.

local function big_keys(P, state)
    return P .. ':s:' .. state, P .. ':a:' .. state, P .. ':p:' .. state, P .. ':n:' .. state
end

local HEADER, LEGACY_HEADER = 35, 42 -- '#'; '*' began the text headers (and older blobs) of earlier versions

local function is_big(v)
    local b = string.byte(v, 1)
    return b == HEADER or b == LEGACY_HEADER
end

local function parse_header(v)
    if string.byte(v, 1) == LEGACY_HEADER then
        local T, n, _, pending, neg, live = string.match(v, '^%*(%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
        return tonumber(T), tonumber(n), tonumber(pending), tonumber(neg), tonumber(live), true
    end
    local T, n, pending, neg, live = struct.unpack('<I4I4I4I4I4', v, 2)
    return T, n, pending, neg, live, false
end

local function format_header(T, n, pending, neg, live)
    return '#' .. struct.pack('<I4I4I4I4I4', T, n, pending, neg, live)
end

-- Alias tables rebuilt by the current call (returned by markov_apply for the trainers' metrics).
local rebuilds = 0

-- Rebuilds a big state's alias table from its counts; returns its new header.
local function rebuild_big(P, state)
    rebuilds = rebuilds + 1
    local sk, ak, pk, nk = big_keys(P, state)
    local flat = redis.call('HGETALL', sk)
    local toks, counts = {}, {}
    for i = 1, #flat, 2 do
        toks[#toks + 1] = flat[i]
        counts[#counts + 1] = tonumber(flat[i + 1])
    end
    redis.call('DEL', pk, nk)
    local blob, T = build_alias(toks, counts)
    redis.call('SET', ak, blob)
    redis.call('HINCRBY', P .. ':meta', 'rebuilds', 1)
    return format_header(T, #toks, 0, 0, #toks)
end

-- Applies deltas {token → change} to a big state; returns (new header or nil when empty, edges added,
-- edges removed, total change).
local function apply_big(P, state, header, deltas)
    local sk, ak, pk, nk = big_keys(P, state)
    local T, n, pending, neg, live, legacy = parse_header(header)
    local added, removed, total = 0, 0, 0
    local units = {}
    for tok, d in pairs(deltas) do
        if d ~= 0 then
            local after = redis.call('HINCRBY', sk, tok, d)
            local before = after - d
            if after <= 0 then
                redis.call('HDEL', sk, tok)
                if after < 0 then d = -before; after = 0 end -- never below zero
            end
            if before <= 0 and after > 0 then added = added + 1 end
            if before > 0 and after == 0 then removed = removed + 1 end
            total = total + d
            if d > 0 then
                for _ = 1, d do units[#units + 1] = tok end
            else
                redis.call('HINCRBY', nk, tok, -d)
                neg = neg - d
            end
        end
    end
    for i = 1, #units, 1000 do -- in chunks: unpack() is limited by Lua's C stack
        redis.call('RPUSH', pk, unpack(units, i, math.min(i + 999, #units)))
    end
    pending = pending + #units
    live = live + added - removed
    if live <= 0 then
        redis.call('DEL', sk, ak, pk, nk)
        return nil, added, removed, total
    end
    if legacy or pending > math.max(MIN_PENDING, T / 4) or neg > T / 4 then
        return rebuild_big(P, state), added, removed, total
    end
    return format_header(T, n, pending, neg, live), added, removed, total
end

-- Moves a small state to keys of its own; returns its header.
local function promote(P, state, toks, counts)
    local sk = P .. ':s:' .. state
    local flat = {}
    for i = 1, #toks do
        if counts[i] > 0 then
            flat[#flat + 1] = toks[i]
            flat[#flat + 1] = counts[i]
        end
    end
    redis.call('HSET', sk, unpack(flat))
    redis.call('SADD', P .. ':big', state)
    return rebuild_big(P, state)
end

-- The chain update of one call: deltas[state][token] = change, applied state by state.

local Chain = {}
Chain.__index = Chain

local function new_chain(meta)
    local L, p = load_table(meta)
    return setmetatable({ meta = meta, P = prefix_of(meta), L = L, p = p, deltas = {}, order = {},
        hashes = {}, states = 0, edges = 0, total = 0 }, Chain)
end

function Chain:hash(state)
    local h = self.hashes[state]
    if not h then
        h = state_hash(state)
        self.hashes[state] = h
    end
    return h
end

function Chain:add(state, tok, d)
    local row = self.deltas[state]
    if not row then
        row = {}
        self.deltas[state] = row
        self.order[#self.order + 1] = state
    end
    row[tok] = (row[tok] or 0) + d
end

-- Adds (d = 1) or removes (d = -1) one message's transitions. tokens: the message's tokens joined by ' ';
-- hashes: the bucket hash of each state, 8 hex digits each, computed by the trainer (or '' to compute here).
function Chain:learn(n, tokens, d, hashes)
    local seq = {}
    for i = 1, n do seq[i] = '' end
    for t in string.gmatch(tokens, '[^ ]+') do seq[#seq + 1] = t end
    if #seq == n then return 0 end
    seq[#seq + 1] = ''
    local given = hashes ~= nil and #hashes == 8 * (#seq - n)
    for i = 1, #seq - n do
        local state = table.concat(seq, ' ', i, i + n - 1)
        if given and not self.hashes[state] then
            self.hashes[state] = tonumber(string.sub(hashes, 8 * i - 7, 8 * i), 16)
        end
        self:add(state, seq[i + n], d)
    end
    return #seq - n
end

function Chain:flush()
    local P = self.P
    for _, state in ipairs(self.order) do
        local deltas = self.deltas[state]
        local bk = bucket_key(P, self:hash(state), self.L, self.p)
        local v = redis.call('HGET', bk, state)
        if v and is_big(v) then
            local header, added, removed, total = apply_big(P, state, v, deltas)
            self.edges = self.edges + added - removed
            self.total = self.total + total
            if header then
                redis.call('HSET', bk, state, header)
            else
                redis.call('HDEL', bk, state)
                redis.call('SREM', P .. ':big', state)
                self.states = self.states - 1
            end
        else
            local toks, counts = {}, {}
            if v then toks, counts = decode_small(v) end
            local index = {}
            for i = 1, #toks do index[toks[i]] = i end
            for tok, d in pairs(deltas) do
                local i = index[tok]
                if i then
                    local after = counts[i] + d
                    if after < 0 then d = -counts[i]; after = 0 end
                    if counts[i] > 0 and after == 0 then self.edges = self.edges - 1 end
                    counts[i] = after
                    self.total = self.total + d
                elseif d > 0 then
                    toks[#toks + 1] = tok
                    counts[#counts + 1] = d
                    index[tok] = #toks
                    self.edges = self.edges + 1
                    self.total = self.total + d
                end
            end
            local encoded = encode_small(toks, counts)
            if encoded == '' then
                if v then
                    redis.call('HDEL', bk, state)
                    self.states = self.states - 1
                end
            else
                if not v then self.states = self.states + 1 end
                if #encoded > BIG_VALUE or #state > BIG_NAME then
                    local live_t, live_c = {}, {}
                    for i = 1, #toks do
                        if counts[i] > 0 then
                            live_t[#live_t + 1] = toks[i]
                            live_c[#live_c + 1] = counts[i]
                        end
                    end
                    redis.call('HSET', bk, state, promote(P, state, live_t, live_c))
                else
                    redis.call('HSET', bk, state, encoded)
                end
            end
        end
    end
    local meta = self.meta
    if self.edges ~= 0 then redis.call('HINCRBY', meta, 'transitions', self.edges) end
    if self.total ~= 0 then redis.call('HINCRBY', meta, 'count', self.total) end
    if self.states ~= 0 then
        local states = redis.call('HINCRBY', meta, 'states', self.states)
        -- Grow the bucket table while it is too full, one split at a time.
        local L, p = self.L, self.p
        while states > SPLIT_LOAD * (2 ^ L + p) do
            local old = P .. ':c:' .. p
            local new = P .. ':c:' .. (p + 2 ^ L)
            local flat = redis.call('HGETALL', old)
            for i = 1, #flat, 2 do
                if state_hash(flat[i]) % (2 ^ (L + 1)) ~= p then
                    redis.call('HSET', new, flat[i], flat[i + 1])
                    redis.call('HDEL', old, flat[i])
                end
            end
            p = p + 1
            if p == 2 ^ L then L = L + 1; p = 0 end
        end
        if L ~= self.L or p ~= self.p then
            redis.call('HSET', meta, 'L', L, 'p', p)
            self.L, self.p = L, p
        end
    end
end

-- A guild's state size is fixed by its first apply; mixing sizes would corrupt the chain.
local function check_state_size(meta, n, record)
    local stored = redis.call('HGET', meta, 'state_size')
    if stored and tonumber(stored) ~= n then
        return redis.error_reply('ERR markov: this guild was trained with state size ' .. stored .. ', not ' .. n)
    end
    if not stored and record then redis.call('HSET', meta, 'state_size', n) end
    return nil
end

-- Message records: '{g}:m' maps message id → 'author\ttokens' (what was learnt), or '-' once deleted, so a
-- late create cannot bring it back, or '~tokens' for an edit that arrived before its create (trainers share a
-- partition's entries, so a create and its edit can be applied by two trainers in either order): the create
-- then learns the edited tokens. '{g}:h' counts messages by a hash of their tokens, so generation can refuse
-- to repeat one verbatim.

local function content_hash(tokens)
    return string.sub(redis.sha1hex(tokens), 1, 16)
end

local function forget_record(chain, P, n, record)
    local tab = string.find(record, '\t', 1, true)
    if not tab then return end
    local tokens = string.sub(record, tab + 1)
    chain:learn(n, tokens, -1)
    local hk = P .. ':h'
    local h = content_hash(tokens)
    if redis.call('HINCRBY', hk, h, -1) <= 0 then redis.call('HDEL', hk, h) end
    redis.call('HINCRBY', P .. ':meta', 'messages', -1)
end

local function remember_record(chain, P, n, id, author, tokens, hashes, chash)
    redis.call('HSET', P .. ':m', id, author .. '\t' .. tokens)
    chain:learn(n, tokens, 1, hashes)
    if #chash ~= 16 then chash = content_hash(tokens) end
    redis.call('HINCRBY', P .. ':h', chash, 1)
    redis.call('HINCRBY', P .. ':meta', 'messages', 1)
end

-- markov_apply(meta; n, then ops of 9 fields: kind, id, author, channel, force, tokens, state hashes, content hash,
--   image URL)
--   kind 'c' create: learnt unless the id is known (duplicate, replay, or deleted), the channel is not enabled
--        for learning (unless force = '1'; force = 'b<started>' for a backfill's message: forced while the guild's
--        backfill started then, skipped when it is gone), or the author opted out; a learnt message's image URL is kept in
--        P:img (message id -> URL) until the message is deleted, emptied or its author forgotten;
--   kind 'u' update: replaces the learnt tokens of a known message; for a message not seen yet, keeps the tokens
--        for its create ('~tokens');
--   kind 'd' delete: forgets a known message and remembers the id as deleted;
--   kind 't' thread: remembers the thread's channel (P:threads thread -> channel), so that a message in a thread
--        is learnt when its channel is enabled.
-- Returns {created, updated, deleted, skipped, alias tables rebuilt}.
local function apply(keys, args)
    rebuilds = 0
    local meta = keys[1]
    local P = prefix_of(meta)
    local n = tonumber(args[1])
    local mismatch = check_state_size(meta, n, true)
    if mismatch then return mismatch end
    local chain = new_chain(meta)
    local created, updated, deleted, skipped = 0, 0, 0, 0
    local listen, optout = P .. ':listen', P .. ':optout'
    local mk, ik = P .. ':m', P .. ':img'
    for i = 2, #args, 9 do
        local kind, id, author, channel, force, tokens = args[i], args[i + 1], args[i + 2], args[i + 3], args[i + 4], args[i + 5]
        local hashes, chash, image = args[i + 6], args[i + 7], args[i + 8]
        local record = redis.call('HGET', mk, id)
        if kind == 'c' and record and string.sub(record, 1, 1) == '~' then
            -- Edited before this create arrived: learn the edited text.
            tokens = string.sub(record, 2)
            hashes, chash = '', ''
            record = nil
        end
        if kind == 'c' and string.sub(force, 1, 1) == 'b' then
            -- Read by a history backfill: learnt (as forced) only while the guild's backfill is that one.
            force = (redis.call('HGET', P .. ':backfill', 'started') == string.sub(force, 2)) and '1' or 'x'
        end
        if kind == 'c' then
            if record or force == 'x'
                or (force ~= '1' and redis.call('SISMEMBER', listen, channel) == 0
                    and redis.call('SISMEMBER', listen, redis.call('HGET', P .. ':threads', channel) or '') == 0)
                or redis.call('SISMEMBER', optout, author) == 1
                or tokens == '' then
                skipped = skipped + 1
            else
                remember_record(chain, P, n, id, author, tokens, hashes, chash)
                if image and image ~= '' then redis.call('HSET', ik, id, image) end
                created = created + 1
            end
        elseif kind == 'u' then
            if record == '-' then
                skipped = skipped + 1
            elseif not record or string.sub(record, 1, 1) == '~' then
                redis.call('HSET', mk, id, '~' .. tokens)
                skipped = skipped + 1
            else
                local tab = string.find(record, '\t', 1, true)
                local old_author = string.sub(record, 1, tab - 1)
                if string.sub(record, tab + 1) == tokens then
                    skipped = skipped + 1
                else
                    forget_record(chain, P, n, record)
                    if tokens == '' then
                        redis.call('HDEL', mk, id)
                        redis.call('HDEL', ik, id)
                    else
                        remember_record(chain, P, n, id, old_author, tokens, hashes, chash)
                    end
                    updated = updated + 1
                end
            end
        elseif kind == 'd' then
            if record == '-' then
                skipped = skipped + 1
            else
                if record then
                    forget_record(chain, P, n, record)
                    deleted = deleted + 1
                else
                    skipped = skipped + 1
                end
                redis.call('HSET', mk, id, '-')
                redis.call('HDEL', ik, id)
            end
        elseif kind == 't' then
            redis.call('HSET', P .. ':threads', id, channel)
        else
            return redis.error_reply('ERR markov_apply: unknown op kind ' .. tostring(kind))
        end
    end
    chain:flush()
    return { created, updated, deleted, skipped, rebuilds }
end

-- Sampling ----------------------------------------------------------------------------------------------------

-- Successor of a state: token, its count (big states: only when debug_counts), the state's total; nil when the
-- state is unknown.
local debug_counts = false
local linear_scan = false -- ablation: sample big states by scanning their counts instead of the alias table

-- Draws from a big state's counts hash by a linear scan: the fallback, and the benchmark's ablation.
local function scan_counts(sk, total)
    local flat = redis.call('HGETALL', sk)
    local r = rand_below(total)
    for i = 1, #flat, 2 do
        r = r - tonumber(flat[i + 1])
        if r < 0 then return flat[i], tonumber(flat[i + 1]), total end
    end
    return nil
end

-- A small state's successors 'count\ttoken\n…': one draw, in two passes over the string (no tables).
local function sample_small(v)
    local find, sub = string.find, string.sub
    local nl = find(v, '\n', 1, true)
    if not nl then -- one successor: the common case
        local tab = find(v, '\t', 1, true)
        local count = tonumber(sub(v, 1, tab - 1))
        return sub(v, tab + 1), count, count
    end
    local total, pos = 0, 1
    while pos do
        local tab = find(v, '\t', pos, true)
        total = total + tonumber(sub(v, pos, tab - 1))
        nl = find(v, '\n', tab + 1, true)
        pos = nl and nl + 1
    end
    local r = rand_below(total)
    pos = 1
    while pos do
        local tab = find(v, '\t', pos, true)
        local count = tonumber(sub(v, pos, tab - 1))
        nl = find(v, '\n', tab + 1, true)
        r = r - count
        if r < 0 then return sub(v, tab + 1, nl and nl - 1), count, total end
        pos = nl and nl + 1
    end
    return nil
end

local function sample_state(P, L, p, state)
    local v = redis.call('HGET', bucket_key(P, state_hash(state), L, p), state)
    if not v then return nil end
    if not is_big(v) then return sample_small(v) end
    local T, n, pending, neg, _, legacy = parse_header(v)
    local total = T + pending - neg
    if total <= 0 then return nil end
    local sk = P .. ':s:' .. state
    if legacy or linear_scan then return scan_counts(sk, total) end -- legacy: until its next rebuild
    local ak, tokens_at = P .. ':a:' .. state, 8 + 20 * n
    for _ = 1, 64 do
        local tok
        local r = pending > 0 and rand_below(T + pending) or 0
        if r < T then
            local i = rand_below(n)
            local thr, s1, s2, l1, l2 = struct.unpack('<I4I4I4I4I4', redis.call('GETRANGE', ak, 8 + 20 * i, 27 + 20 * i))
            if rand_below(T) >= thr then s1, l1 = s2, l2 end
            if l1 > 0 then tok = redis.call('GETRANGE', ak, tokens_at + s1, tokens_at + s1 + l1 - 1) else tok = '' end
        else
            tok = redis.call('LINDEX', P .. ':p:' .. state, r - T)
        end
        if neg == 0 then
            if debug_counts then return tok, tonumber(redis.call('HGET', sk, tok) or '0'), total end
            return tok, 0, total
        end
        local count = tonumber(redis.call('HGET', sk, tok) or '0')
        local minus = tonumber(redis.call('HGET', P .. ':n:' .. state, tok) or '0')
        if minus == 0 or rand_below(count + minus) < count then return tok, count, total end
    end
    -- Extremely unlikely (each try accepts with probability >= 3/4): fall back to a linear scan.
    return scan_counts(sk, total)
end

local function utf16_length(s)
    local units = 0
    for i = 1, #s do
        local b = string.byte(s, i)
        if b < 0x80 or b >= 0xC0 then units = units + 1 end
        if b >= 0xF0 then units = units + 1 end
    end
    return units
end

local function state_exists(P, L, p, state)
    local bk = bucket_key(P, state_hash(state), L, p)
    return redis.call('HEXISTS', bk, state) == 1
end

-- markov_generate(meta; n, seed_a, seed_b, max_words, max_tries, min_words, max_chars, allow_copies, debug,
--                 sampling ('alias', or 'linear' for the benchmark ablation), seed words…)
-- Returns {sentence or false, tries, notes, steps} where steps (debug only) is a flat list of
-- token, count, total per step of the returned sentence, and notes explains how the seed was used.
local function generate(keys, args)
    local meta = keys[1]
    local P = prefix_of(meta)
    local n = tonumber(args[1])
    local mismatch = check_state_size(meta, n, false)
    if mismatch then return mismatch end
    seed_rng(args[2], args[3])
    local max_words, max_tries, min_words, max_chars = tonumber(args[4]), tonumber(args[5]), tonumber(args[6]), tonumber(args[7])
    local allow_copies, debug = args[8] == '1', args[9] == '1'
    debug_counts = debug
    linear_scan = args[10] == 'linear'
    local seed = {}
    for i = 11, #args do seed[#seed + 1] = args[i] end
    local L, p = load_table(meta)

    -- Where to start: the last n seed words as a state; else a seed word that starts messages (the last such);
    -- else anywhere.
    local start, prefix, note = {}, {}, 'no seed'
    for i = 1, n do start[i] = '' end
    if #seed > 0 then
        note = 'seed words unknown; started at random'
        local found = false
        if #seed >= n then
            local last = {}
            for i = #seed - n + 1, #seed do last[#last + 1] = seed[i] end
            if state_exists(P, L, p, table.concat(last, ' ')) then
                start, prefix, found = last, last, true
                note = 'seeded with the state "' .. table.concat(last, ' ') .. '"'
            end
        end
        if not found then
            for i = #seed, 1, -1 do
                local s = {}
                for k = 1, n - 1 do s[k] = '' end
                s[n] = seed[i]
                if state_exists(P, L, p, table.concat(s, ' ')) then
                    start, prefix, found = s, { seed[i] }, true
                    note = 'seeded with "' .. seed[i] .. '", a word messages start with'
                    break
                end
            end
        end
    end

    local reason = 'the guild has no data'
    for try = 1, max_tries do
        local state = table.concat(start, ' ')
        local out, steps = {}, {}
        for i = 1, #prefix do out[i] = prefix[i] end
        local words, ended = #out, false
        while words < max_words do
            local tok, count, total = sample_state(P, L, p, state)
            if tok == nil then break end
            if debug then
                steps[#steps + 1] = tok
                steps[#steps + 1] = count
                steps[#steps + 1] = total
            end
            if tok == '' then ended = true; break end
            words = words + 1
            out[words] = tok
            -- The next state: this one without its first token, then tok (tokens never contain spaces).
            if n == 1 then state = tok else state = string.sub(state, string.find(state, ' ', 1, true) + 1) .. ' ' .. tok end
        end
        local sentence = table.concat(out, ' ')
        if not ended then
            reason = (#out >= max_words) and 'every try ran past the word limit' or reason
        elseif #out == 0 then
            reason = 'the guild has no data'
        elseif #out < min_words then
            reason = 'every try was shorter than the minimum'
        elseif #sentence > max_chars and utf16_length(sentence) > max_chars then -- bytes >= UTF-16 units
            reason = 'every try was longer than the character limit'
        elseif not allow_copies and redis.call('HEXISTS', P .. ':h', content_hash(sentence)) == 1 then
            reason = 'every try repeated a message verbatim'
        else
            return { sentence, try, note, steps }
        end
    end
    return { false, max_tries, note .. '; ' .. reason, {} }
end

-- Inspection --------------------------------------------------------------------------------------------------

-- markov_state(meta; state) → {kind, bucket key, successors (token, count …), alias info}
local function inspect_state(keys, args)
    local meta = keys[1]
    local P = prefix_of(meta)
    local state = args[1]
    local L, p = load_table(meta)
    local bk = bucket_key(P, state_hash(state), L, p)
    local v = redis.call('HGET', bk, state)
    if not v then return { 'unknown', bk, {}, {} } end
    if not is_big(v) then
        local toks, counts = decode_small(v)
        local flat = {}
        for i = 1, #toks do flat[#flat + 1] = toks[i]; flat[#flat + 1] = counts[i] end
        return { 'small', bk, flat, {} }
    end
    local sk, ak, pk = big_keys(P, state)
    local T, cols, pending, neg = parse_header(v)
    return { 'big', bk, redis.call('HGETALL', sk),
        { 'alias_total', T, 'alias_columns', cols, 'pending_increments', pending, 'pending_decrements', neg,
          'counts_key', sk, 'alias_key', ak, 'pending_key', pk } }
end

-- markov_forget_user(meta; n, user, cursor, count): opts the user out, then forgets their messages found in one
-- HSCAN step. Returns {next cursor, forgotten}. Call until the cursor is '0'.
local function forget_user(keys, args)
    local meta = keys[1]
    local P = prefix_of(meta)
    local n, user, cursor, count = tonumber(args[1]), args[2], args[3], args[4]
    redis.call('SADD', P .. ':optout', user)
    local chain = new_chain(meta)
    local page = redis.call('HSCAN', P .. ':m', cursor, 'COUNT', count)
    local flat = page[2]
    local forgotten = 0
    local needle = user .. '\t'
    for i = 1, #flat, 2 do
        local record = flat[i + 1]
        if string.sub(record, 1, #needle) == needle then
            forget_record(chain, P, n, record)
            redis.call('HSET', P .. ':m', flat[i], '-')
            redis.call('HDEL', P .. ':img', flat[i])
            forgotten = forgotten + 1
        end
    end
    chain:flush()
    return { page[1], forgotten }
end

-- markov_delete_guild(meta; [keep-optouts]): removes every key of the guild; with 'keep-optouts' (a guild's own
-- `/delete-data`) the users who opted out stay out. Returns the number of keys removed.
local function delete_guild(keys, args)
    local meta = keys[1]
    local P = prefix_of(meta)
    local L, p = load_table(meta)
    local removed = 0
    local buckets = 2 ^ L + p
    for b = 0, buckets - 1 do removed = removed + redis.call('UNLINK', P .. ':c:' .. b) end
    local big = redis.call('SMEMBERS', P .. ':big')
    for _, state in ipairs(big) do
        local sk, ak, pk, nk = big_keys(P, state)
        removed = removed + redis.call('UNLINK', sk, ak, pk, nk)
    end
    removed = removed + redis.call('UNLINK', meta, P .. ':big', P .. ':m', P .. ':h', P .. ':listen',
        P .. ':cfg')
    if args[1] ~= 'keep-optouts' then removed = removed + redis.call('UNLINK', P .. ':optout') end
    -- The responders' settings and backfill of the guild go with it.
    removed = removed + redis.call('UNLINK', P .. ':img', P .. ':threads', P .. ':chance', P .. ':autorespond', P .. ':reply-channels',
        P .. ':ask-roles', P .. ':backfill', P .. ':backfill:queue')
    return removed
end

redis.register_function('markov_v1_apply', apply)
