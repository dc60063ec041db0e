#!lua name=markov
--[[
The chain store's code inside Redis. Every function works on ONE guild: KEYS[1] is the guild's meta key
'{g:<id>}:meta', and every other key it touches starts with the same '{g:<id>}' hash tag, so a guild lives in
one cluster slot and each call is atomic. docs/chain-store.md describes the layout and the reasons.

The trainers compute everything (tokens, counts, sampling tables, encodings) and send finished values;
Redis only stores them. The one writing function, markov_write, checks the writer's fencing epoch and
write sequence and then makes a constant number of redis.calls per key it is given, never per transition.
The reading functions walk the layout the trainers wrote:

  layout 2 (meta field layout = '2'), written by the trainers:
    '{g}:b:<n>'   bucket hashes, field = state text (tokens joined by ' '; the start pads with empty tokens),
                  value = a small state's successors, or a big state's header;
    '{g}:L'       the same for states whose text passes 64 bytes (buckets stay in listpack encoding);
    '{g}:x:<st>'  a big state's alias table and token entries; '{g}:u:<st>' its increments since the table
                  was built; '{g}:d:<st>' its changed tokens since then.
  layout 1 (no layout field): the layout Lua itself maintained before; read here until a trainer upgrades the
  guild (markov migrate, or the first event of the guild).
]]

-- The standard libraries are bound at the first call: a library's code may not touch them while it loads.
local byte, sub, find, bunpack

local function bind()
    if not byte then byte, sub, find, bunpack = string.byte, string.sub, string.find, struct.unpack end
end

-- Keys ---------------------------------------------------------------------------------------------------------

local function prefix_of(meta_key)
    return sub(meta_key, 1, #meta_key - 5) -- strip ':meta'
end

-- Linear hashing: a state of hash h is in bucket h mod 2^L, or h mod 2^(L+1) when that is below the split
-- pointer p.
local function bucket_of(h, L, p)
    local size = 2 ^ L
    local b = h % size
    if b < p then b = h % (size * 2) end
    return b
end

-- Key suffixes for the first 2^16 bucket numbers, made once: formatting a number costs as much as a command here.
local suffixes1, suffixes2 = {}, {}

local function bucket_suffix(cache, letter, b)
    local suffix = cache[b]
    if not suffix then
        suffix = letter .. b
        if b < 65536 then cache[b] = suffix end
    end
    return suffix
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

local function utf16_length(s)
    local units = 0
    for i = 1, #s do
        local b = byte(s, i)
        if b < 0x80 or b >= 0xC0 then units = units + 1 end
        if b >= 0xF0 then units = units + 1 end
    end
    return units
end

-- '{g}:h' counts messages by the first 16 hex digits of SHA-1 of their tokens, so generation can refuse to
-- repeat one verbatim.
local function content_hash(tokens)
    return sub(redis.sha1hex(tokens), 1, 16)
end

-- Layout 2 -----------------------------------------------------------------------------------------------------
--[[
A state's hash is the first 24 bits of SHA-1 of its text. Successors carry the hash of the state they lead to,
so a walk hashes only where it starts.

Small state value: u8 n (successors, 1..255); when n > 1 the total as a count8; then n entries
  [u24 hash of the next state][u8 token length][token bytes][count8]
  (count8: one byte below 255, else 255 and a u32). All integers little endian.
Big state value (the header): u8 0, u32 T (alias total), u32 columns, u32 P (increments since the build),
  u32 neg (decrements since the build), u32 live (successors with a count).
'{g}:x:<state>': u32 T, u32 columns, then 12-byte columns [u32 threshold][u32 offset][u32 alias offset], then
  token entries [u16 length][u24 hash of the next state][u32 base count][token bytes]; offsets count from the
  first entry (8 + 12 * columns). Entries for tokens new since the build are appended at the end.
'{g}:u:<state>': the increments since the build, one u32 entry offset per unit.
'{g}:d:<state>': entry offset (u32) -> [u32 decrements][u32 weight], for tokens with decrements since the build:
  weight = base + increments (frozen while there are decrements: increments cancel decrements first); the
  token's count is weight - decrements.
A draw picks the table (weight T) or the increments (weight P, uniform), then accepts token t with probability
count / weight: exactly count / total, whatever the table's age (docs/chain-store.md).
]]

local function hash24(state)
    return tonumber(sub(redis.sha1hex(state), 1, 6), 16)
end

local function state_key2(P, L, p, state, h)
    if #state > 64 then return P .. ':L' end
    return P .. bucket_suffix(suffixes2, ':b:', bucket_of(h, L, p))
end

-- A count8 at pos: its value and the position after it.
local function count8(v, pos)
    local b = byte(v, pos)
    if b < 255 then return b, pos + 1 end
    local c = bunpack('<I4', v, pos + 1)
    return c, pos + 5
end

local debug_counts = false
local linear_scan = false -- ablation: sample big states by scanning their counts instead of the alias table

-- The increments of a big state since its blob was built, per entry offset.
local function big_increments(P, state)
    local inc = {}
    local units = redis.call('GET', P .. ':u:' .. state)
    if units then
        for i = 1, #units - 3, 4 do
            local off = bunpack('<I4', units, i)
            inc[off] = (inc[off] or 0) + 1
        end
    end
    return inc
end

-- A big state's successors from its entries, increments and decrements: {token, count, hash} lists.
local function big_counts(P, state, v)
    local columns = bunpack('<I4', v, 6)
    local blob = redis.call('GET', P .. ':x:' .. state)
    if not blob then return {}, {}, {} end
    local inc = big_increments(P, state)
    local dec = {}
    local d = redis.call('HGETALL', P .. ':d:' .. state)
    for i = 1, #d, 2 do
        dec[bunpack('<I4', d[i])] = bunpack('<I4', d[i + 1])
    end
    local toks, counts, hashes = {}, {}, {}
    local area = 8 + 12 * columns
    local pos = area + 1
    while pos <= #blob do
        local len, h, base = bunpack('<I2I3I4', blob, pos)
        local off = pos - area - 1
        local count = base + (inc[off] or 0) - (dec[off] or 0)
        if count > 0 then
            toks[#toks + 1] = sub(blob, pos + 9, pos + 8 + len)
            counts[#counts + 1] = count
            hashes[#hashes + 1] = h
        end
        pos = pos + 9 + len
    end
    return toks, counts, hashes
end

-- Draws a successor of a big state: token, hash of the next state, count (when debug), total.
local function draw_big(P, state, v)
    local T, columns, pending, neg = bunpack('<I4I4I4I4', v, 2)
    local total = T + pending - neg
    if total <= 0 then return nil end
    if linear_scan then
        local toks, counts, hashes = big_counts(P, state, v)
        local r = rand_below(total)
        for i = 1, #toks do
            r = r - counts[i]
            if r < 0 then return toks[i], hashes[i], counts[i], total end
        end
        return nil
    end
    local xk = P .. ':x:' .. state
    local area = 8 + 12 * columns
    for _ = 1, 64 do
        local off
        local r = pending > 0 and rand_below(T + pending) or 0
        if r < T then
            local i = rand_below(columns)
            local thr, o1, o2 = bunpack('<I4I4I4', redis.call('GETRANGE', xk, 8 + 12 * i, 19 + 12 * i))
            if rand_below(T) < thr then off = o1 else off = o2 end
        else
            local at = 4 * (r - T)
            off = bunpack('<I4', redis.call('GETRANGE', P .. ':u:' .. state, at, at + 3))
        end
        -- An entry is 9 bytes and the token: one read for tokens up to 55 bytes, two for longer ones.
        local e = redis.call('GETRANGE', xk, area + off, area + off + 63)
        local len, h, base = bunpack('<I2I3I4', e)
        local tok
        if len <= 55 then tok = sub(e, 10, 9 + len)
        else tok = redis.call('GETRANGE', xk, area + off + 9, area + off + 8 + len) end
        if neg == 0 and not debug_counts then return tok, h, base, total end
        local d = neg > 0 and redis.call('HGET', P .. ':d:' .. state, struct.pack('<I4', off))
        if not d then
            -- No decrements: accepted; its count (for debug) is the base plus its increments.
            if debug_counts and pending > 0 then return tok, h, base + (big_increments(P, state)[off] or 0), total end
            return tok, h, base, total
        end
        local dec, w = bunpack('<I4I4', d)
        if rand_below(w) < w - dec then return tok, h, w - dec, total end
    end
    -- Each try accepts with probability >= 3/4 (tables are rebuilt before decrements pass T/4).
    local toks, counts, hashes = big_counts(P, state, v)
    local r = rand_below(total)
    for i = 1, #toks do
        r = r - counts[i]
        if r < 0 then return toks[i], hashes[i], counts[i], total end
    end
    return nil
end

-- Draws a successor of a state from its value: token ('' is the end), hash of the next state, its count (small
-- states always, big states when debug), the state's total.
local function draw_value(P, state, v)
    local n = byte(v, 1)
    if n == 1 then
        local nh, len = bunpack('<I3B', v, 2)
        local count = count8(v, 6 + len)
        return sub(v, 6, 5 + len), nh, count, count
    end
    if n == 0 then return draw_big(P, state, v) end
    local total, pos = count8(v, 2)
    local r = rand_below(total)
    for _ = 1, n do
        local nh, len = bunpack('<I3B', v, pos)
        local count, after = count8(v, pos + 4 + len)
        r = r - count
        if r < 0 then return sub(v, pos + 4, pos + 3 + len), nh, count, total end
        pos = after
    end
    return nil
end

-- The same from the state's text; nil when the state is unknown.
local function draw2(P, L, p, state, h)
    local v = redis.call('HGET', state_key2(P, L, p, state, h), state)
    if not v then return nil end
    return draw_value(P, state, v)
end

-- A state's total from its value.
local function value_total(v)
    local n = byte(v, 1)
    if n == 1 then
        local _, len = bunpack('<I3B', v, 2)
        return (count8(v, 6 + len))
    end
    if n == 0 then
        local T, _, pending, neg = bunpack('<I4I4I4I4', v, 2)
        return T + pending - neg
    end
    return (count8(v, 2))
end

--[[
Scopes. Text learnt in age-restricted channels is stored as states whose text starts with the byte 0x01 (no token
holds a control character), and is said only in age-restricted channels. There a walk draws from the union of the
two chains: at state s it picks the guild's state s with probability T(s) / (T(s) + T(R s)), else the restricted
state R s, then a successor within it, which gives each token (c(s, t) + c(R s, t)) / (T(s) + T(R s)): exactly the
chain learnt from both. Successors carry the hash of the next state of their own scope; the other's is computed.
]]
local R = '\1'
local successors_of -- successors2, defined below

local function draw_union(P, L, p, state, h, hr)
    local rstate = R .. state
    local vo = redis.call('HGET', state_key2(P, L, p, state, h), state)
    local vr = redis.call('HGET', state_key2(P, L, p, rstate, hr), rstate)
    local to = vo and value_total(vo) or 0
    local tr = vr and value_total(vr) or 0
    if to + tr <= 0 then return nil end
    local tok, nh, count, from_r
    if rand_below(to + tr) < to then
        tok, nh, count = draw_value(P, state, vo)
        from_r = false
    else
        tok, nh, count = draw_value(P, rstate, vr)
        from_r = true
    end
    if tok ~= nil and debug_counts and to > 0 and tr > 0 then
        -- The token's count in the union, for the debug steps.
        local toks, counts = successors_of(P, L, p, from_r and state or rstate, from_r and h or hr)
        for i = 1, #toks do if toks[i] == tok then count = count + counts[i] end end
    end
    return tok, nh, count, to + tr, from_r
end

-- A state's successors with their counts and next-state hashes (layout 2): {token}, {count}, {hash} lists.
local function successors2(P, L, p, state, h)
    local v = redis.call('HGET', state_key2(P, L, p, state, h), state)
    if not v then return {}, {}, {} end
    local n = byte(v, 1)
    if n == 0 then return big_counts(P, state, v) end
    local toks, counts, hashes = {}, {}, {}
    local pos = 2
    if n > 1 then local _; _, pos = count8(v, 2) end
    for i = 1, n do
        local nh, len = bunpack('<I3B', v, pos)
        local count, after = count8(v, pos + 4 + len)
        toks[i], counts[i], hashes[i] = sub(v, pos + 4, pos + 3 + len), count, nh
        pos = after
    end
    return toks, counts, hashes
end

successors_of = successors2

-- The blocklist ('{g}:block', a set of lowercased entries: a token, or '*x', 'x*', '*x*' for the tokens ending
-- in, starting with or containing x). Tokens are compared lowercased (ASCII letters; other letters as stored).
local block_exact, block_prefix, block_suffix, block_inner

local function load_blocklist(P)
    block_exact = nil
    local entries = redis.call('SMEMBERS', P .. ':block')
    if #entries == 0 then return false end
    block_exact, block_prefix, block_suffix, block_inner = {}, {}, {}, {}
    for _, e in ipairs(entries) do
        local starts, ends = sub(e, 1, 1) == '*', sub(e, -1) == '*'
        if starts and ends then block_inner[#block_inner + 1] = sub(e, 2, -2)
        elseif starts then block_suffix[#block_suffix + 1] = sub(e, 2)
        elseif ends then block_prefix[#block_prefix + 1] = sub(e, 1, -2)
        else block_exact[e] = true end
    end
    return true
end

local function is_blocked(tok)
    if not block_exact or tok == '' then return false end
    local t = string.lower(tok)
    if block_exact[t] then return true end
    for _, x in ipairs(block_prefix) do if sub(t, 1, #x) == x then return true end end
    for _, x in ipairs(block_suffix) do if #t >= #x and sub(t, -#x) == x then return true end end
    for _, x in ipairs(block_inner) do if find(t, x, 1, true) then return true end end
    return false
end

-- A state's successors as {token, count} pairs, and what the sampler keeps for it.
local function inspect2(P, L, p, state)
    local key = state_key2(P, L, p, state, hash24(state))
    local v = redis.call('HGET', key, state)
    if not v then return { 'unknown', key, {}, {} } end
    local flat = {}
    local n = byte(v, 1)
    if n > 0 then
        local pos = 2
        if n > 1 then local _; _, pos = count8(v, 2) end
        for _ = 1, n do
            local _, len = bunpack('<I3B', v, pos)
            local count, after = count8(v, pos + 4 + len)
            flat[#flat + 1] = sub(v, pos + 4, pos + 3 + len)
            flat[#flat + 1] = count
            pos = after
        end
        return { 'small', key, flat, {} }
    end
    local T, columns, pending, neg, live = bunpack('<I4I4I4I4I4', v, 2)
    local toks, counts = big_counts(P, state, v)
    for i = 1, #toks do
        flat[#flat + 1] = toks[i]
        flat[#flat + 1] = counts[i]
    end
    return { 'big', key, flat,
        { 'alias_total', T, 'alias_columns', columns, 'pending_increments', pending, 'pending_decrements', neg,
          'live', live, 'alias_key', P .. ':x:' .. state, 'pending_key', P .. ':u:' .. state,
          'decrements_key', P .. ':d:' .. state } }
end

-- Layout 1 (read only) -----------------------------------------------------------------------------------------
-- Small states in '{g}:c:<n>' (value 'count\ttoken\n…', bucket by the first 32 bits of SHA-1); big states with a
-- header '#' + 5 × u32 (or the text header '*…' of an even earlier version), counts in '{g}:s:<state>', alias
-- blob '{g}:a:<state>', increments list '{g}:p:<state>', decrements hash '{g}:n:<state>'.

local function hash32(state)
    return tonumber(sub(redis.sha1hex(state), 1, 8), 16)
end

local function bucket_key1(P, h, L, p)
    return P .. bucket_suffix(suffixes1, ':c:', bucket_of(h, L, p))
end

local function decode_small1(v)
    local toks, counts = {}, {}
    local pos = 1
    while true do
        local tab = find(v, '\t', pos, true)
        if not tab then break end
        counts[#counts + 1] = tonumber(sub(v, pos, tab - 1))
        local stop = find(v, '\n', tab + 1, true)
        if stop then
            toks[#toks + 1] = sub(v, tab + 1, stop - 1)
            pos = stop + 1
        else
            toks[#toks + 1] = sub(v, tab + 1)
            break
        end
    end
    return toks, counts
end

local HEADER1, LEGACY_HEADER1 = 35, 42

local function is_big1(v)
    local b = byte(v, 1)
    return b == HEADER1 or b == LEGACY_HEADER1
end

local function parse_header1(v)
    if byte(v, 1) == LEGACY_HEADER1 then
        local T, n, _, pending, neg, live = string.match(v, '^%*(%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
        return tonumber(T), tonumber(n), tonumber(pending), tonumber(neg), tonumber(live), true
    end
    local T, n, pending, neg, live = bunpack('<I4I4I4I4I4', v, 2)
    return T, n, pending, neg, live, false
end

local function scan_counts1(sk, total)
    local flat = redis.call('HGETALL', sk)
    local r = rand_below(total)
    for i = 1, #flat, 2 do
        r = r - tonumber(flat[i + 1])
        if r < 0 then return flat[i], tonumber(flat[i + 1]), total end
    end
    return nil
end

local function sample_small1(v)
    local nl = find(v, '\n', 1, true)
    if not nl then
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

-- Draws a successor in layout 1: token, count, total (the hash argument is unused: layout 1 hashes each state).
local function draw1(P, L, p, state)
    local v = redis.call('HGET', bucket_key1(P, hash32(state), L, p), state)
    if not v then return nil end
    if not is_big1(v) then
        local tok, count, total = sample_small1(v)
        return tok, 0, count, total
    end
    local T, n, pending, neg, _, legacy = parse_header1(v)
    local total = T + pending - neg
    if total <= 0 then return nil end
    local sk = P .. ':s:' .. state
    if legacy or linear_scan then
        local tok, count = scan_counts1(sk, total)
        return tok, 0, count, total
    end
    local ak, tokens_at = P .. ':a:' .. state, 8 + 20 * n
    for _ = 1, 64 do
        local tok
        local r = pending > 0 and rand_below(T + pending) or 0
        if r < T then
            local i = rand_below(n)
            local thr, s1, s2, l1, l2 = bunpack('<I4I4I4I4I4', redis.call('GETRANGE', ak, 8 + 20 * i, 27 + 20 * i))
            if rand_below(T) >= thr then s1, l1 = s2, l2 end
            if l1 > 0 then tok = redis.call('GETRANGE', ak, tokens_at + s1, tokens_at + s1 + l1 - 1) else tok = '' end
        else
            tok = redis.call('LINDEX', P .. ':p:' .. state, r - T)
        end
        if neg == 0 then
            if debug_counts then return tok, 0, tonumber(redis.call('HGET', sk, tok) or '0'), total end
            return tok, 0, 0, total
        end
        local count = tonumber(redis.call('HGET', sk, tok) or '0')
        local minus = tonumber(redis.call('HGET', P .. ':n:' .. state, tok) or '0')
        if minus == 0 or rand_below(count + minus) < count then return tok, 0, count, total end
    end
    local tok, count = scan_counts1(sk, total)
    return tok, 0, count, total
end

local function inspect1(P, L, p, state)
    local bk = bucket_key1(P, hash32(state), L, p)
    local v = redis.call('HGET', bk, state)
    if not v then return { 'unknown', bk, {}, {} } end
    if not is_big1(v) then
        local toks, counts = decode_small1(v)
        local flat = {}
        for i = 1, #toks do flat[#flat + 1] = toks[i]; flat[#flat + 1] = counts[i] end
        return { 'small', bk, flat, {} }
    end
    local sk = P .. ':s:' .. state
    local T, cols, pending, neg = parse_header1(v)
    return { 'big', bk, redis.call('HGETALL', sk),
        { 'layout', 1, 'alias_total', T, 'alias_columns', cols, 'pending_increments', pending,
          'pending_decrements', neg, 'counts_key', sk, 'alias_key', P .. ':a:' .. state } }
end

-- The guild's layout ------------------------------------------------------------------------------------------

-- {state size, L, p, layout} of a guild; an error reply when its state size differs from the caller's.
local function read_meta(meta, n)
    local v = redis.call('HMGET', meta, 'state_size', 'L', 'p', 'layout')
    if v[1] and tonumber(v[1]) ~= n then
        return nil, redis.error_reply('STATESIZE this guild was trained with state size ' .. v[1] .. ', not ' .. n)
    end
    return { L = tonumber(v[2]) or 0, p = tonumber(v[3]) or 0, layout = tonumber(v[4]) or 1 }
end

-- Generation --------------------------------------------------------------------------------------------------

-- markov_generate(meta; n, seed_a, seed_b, max_words, max_tries, min_words, max_chars, allow_copies, debug,
--                 options (comma-separated: 'alias' or 'linear' for the benchmark ablation; 'restricted' to draw
--                 from the age-restricted scope too), seed words…)
-- Returns {sentence or false, tries, notes, steps} where steps (debug only) is a flat list of
-- token, count, total per step of the returned sentence, and notes explains how the seed was used.
local function generate(keys, args)
    bind()
    local meta = keys[1]
    local P = prefix_of(meta)
    local n = tonumber(args[1])
    local shape, err = read_meta(meta, n)
    if not shape then return err end
    local L, p = shape.L, shape.p
    local v2 = shape.layout == 2
    local draw = v2 and draw2 or draw1
    local options = ',' .. (args[10] or '') .. ','
    -- Layout 1 predates scopes: it has no age-restricted states.
    local restricted = v2 and find(options, ',restricted,', 1, true) ~= nil
    local function exists(state)
        if v2 then
            if redis.call('HEXISTS', state_key2(P, L, p, state, hash24(state)), state) == 1 then return true end
            return restricted and redis.call('HEXISTS', state_key2(P, L, p, R .. state, hash24(R .. state)), R .. state) == 1
        end
        return redis.call('HEXISTS', bucket_key1(P, hash32(state), L, p), state) == 1
    end
    seed_rng(args[2], args[3])
    local max_words, max_tries, min_words, max_chars = tonumber(args[4]), tonumber(args[5]), tonumber(args[6]), tonumber(args[7])
    local allow_copies, debug = args[8] == '1', args[9] == '1'
    debug_counts = debug
    linear_scan = find(options, ',linear,', 1, true) ~= nil
    -- One draw: token, next hash, count, total, and (restricted) whether it came from the restricted state.
    local function draw_any(state, h, hr)
        if restricted then return draw_union(P, L, p, state, h, hr) end
        return draw(P, L, p, state, h)
    end
    local seed = {}
    for i = 11, #args do seed[#seed + 1] = args[i] end
    local blocking = load_blocklist(P)
    local seed_blocked = false
    if blocking then
        for _, word in ipairs(seed) do if is_blocked(word) then seed_blocked = true end end
        if seed_blocked then seed = {} end
    end

    -- A successor of a state, never a blocked token: drawn from the state's distribution conditioned on not
    -- being blocked, exactly. Rejection (redraw a blocked token) gives that distribution; after 32 rejections the
    -- draw is made explicitly from the allowed successors, which is the same distribution, so the mixture is too.
    -- nil, 'blocked' when every successor is blocked (layout 1: after 32 rejections).
    local function pick(state, h, hr)
        if not blocking then return draw_any(state, h, hr) end
        for _ = 1, 32 do
            local tok, nh, count, total, from_r = draw_any(state, h, hr)
            if tok == nil or not is_blocked(tok) then return tok, nh, count, total, from_r end
        end
        if not v2 then return nil, 'blocked' end
        -- Every (scope, successor) pair, drawn by its count: the union's distribution, less the blocked tokens.
        local toks, counts, hashes = successors2(P, L, p, state, h)
        local scopes = {}
        for i = 1, #toks do scopes[i] = false end
        if restricted then
            local rt, rc, rh = successors2(P, L, p, R .. state, hr)
            for i = 1, #rt do
                local k = #toks + 1
                toks[k], counts[k], hashes[k], scopes[k] = rt[i], rc[i], rh[i], true
            end
        end
        local allowed, total = 0, 0
        for i = 1, #toks do
            total = total + counts[i]
            if not is_blocked(toks[i]) then allowed = allowed + counts[i] end
        end
        if allowed == 0 then return nil, 'blocked' end
        local r = rand_below(allowed)
        for i = 1, #toks do
            if not is_blocked(toks[i]) then
                r = r - counts[i]
                if r < 0 then return toks[i], hashes[i], counts[i], total, scopes[i] end
            end
        end
        return nil, 'blocked'
    end

    -- Where to start: the last n seed words as a state; else a seed word that starts messages (the last such);
    -- else anywhere.
    local start, prefix, note = {}, {}, seed_blocked and 'a seed word is blocked; started at random' or 'no seed'
    for i = 1, n do start[i] = '' end
    if #seed > 0 then
        note = 'seed words unknown; started at random'
        local found = false
        if #seed >= n then
            local last = {}
            for i = #seed - n + 1, #seed do last[#last + 1] = seed[i] end
            if exists(table.concat(last, ' ')) then
                start, prefix, found = last, last, true
                note = 'seeded with the state "' .. table.concat(last, ' ') .. '"'
            end
        end
        if not found then
            for i = #seed, 1, -1 do
                local s = {}
                for k = 1, n - 1 do s[k] = '' end
                s[n] = seed[i]
                if exists(table.concat(s, ' ')) then
                    start, prefix, found = s, { seed[i] }, true
                    note = 'seeded with "' .. seed[i] .. '", a word messages start with'
                    break
                end
            end
        end
    end
    local start_state = table.concat(start, ' ')
    local start_hash = v2 and hash24(start_state) or 0
    local start_rhash = restricted and hash24(R .. start_state) or 0

    local reason = 'the guild has no data'
    for try = 1, max_tries do
        local state, h, hr = start_state, start_hash, start_rhash
        local out, steps = {}, {}
        for i = 1, #prefix do out[i] = prefix[i] end
        local words, ended = #out, false
        while words < max_words do
            local tok, nh, count, total, from_r = pick(state, h, hr)
            if tok == nil then
                if nh == 'blocked' then reason = 'every try met a state whose words are all blocked' end
                break
            end
            if debug then
                steps[#steps + 1] = tok
                steps[#steps + 1] = count
                steps[#steps + 1] = total
            end
            if tok == '' then ended = true; break end
            words = words + 1
            out[words] = tok
            -- The next state: this one without its first token, then tok (tokens never contain spaces).
            if n == 1 then state = tok else state = sub(state, find(state, ' ', 1, true) + 1) .. ' ' .. tok end
            if not restricted then h = nh
            elseif from_r then h, hr = hash24(state), nh
            else h, hr = nh, hash24(R .. state) end
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

-- markov_state(meta; n, state) → {kind, key, successors (token, count …), sampling info}
local function inspect_state(keys, args)
    bind()
    local meta = keys[1]
    local P = prefix_of(meta)
    local shape, err = read_meta(meta, tonumber(args[1]))
    if not shape then return err end
    if shape.layout == 2 then return inspect2(P, shape.L, shape.p, args[2]) end
    return inspect1(P, shape.L, shape.p, args[2])
end

-- Writing -----------------------------------------------------------------------------------------------------
-- The trainers write with native commands in MULTI/EXEC transactions, under WATCH of the guild's meta, whose
-- epoch and write sequence they check first (docs/chain-store.md). These functions are the exceptions: the
-- fence itself, and the two writes that need Redis to look at what it holds, called inside those transactions.

-- Refuses a writer whose epoch is older than the newest that wrote the guild, and records a newer one.
local function check_epoch(meta, epoch)
    local stored = tonumber(redis.call('HGET', meta, 'epoch') or '0')
    if epoch < stored then
        return redis.error_reply('FENCED a partition owner of epoch ' .. stored .. ' has written; this writer has epoch ' .. epoch)
    end
    if epoch > stored then redis.call('HSET', meta, 'epoch', epoch) end
    return nil
end

-- markov_fence(meta; epoch) → the guild's meta as a flat list, after recording the epoch: the first call of a
-- partition's new owner for each guild, before it reads anything of the guild. Older owners are refused from then on.
local function fence(keys, args)
    bind()
    local refused = check_epoch(keys[1], tonumber(args[1]))
    if refused then return refused end
    return redis.call('HGETALL', keys[1])
end

-- markov_split(meta; from, into, modulus, target): moves the fields of bucket hash 'from' whose state hash modulo
-- 'modulus' is 'target' to bucket hash 'into' (suffixes after the guild's prefix): a bucket split by an owner that
-- does not know every state of the bucket. Returns how many moved.
local function split(keys, args)
    bind()
    local P = prefix_of(keys[1])
    local from, into = P .. args[1], P .. args[2]
    local modulus, target = tonumber(args[3]), tonumber(args[4])
    local flat = redis.call('HGETALL', from)
    local moving, fields = {}, {}
    for i = 1, #flat, 2 do
        if hash24(flat[i]) % modulus == target then
            moving[#moving + 1] = flat[i]
            moving[#moving + 1] = flat[i + 1]
            fields[#fields + 1] = flat[i]
        end
    end
    if #fields > 0 then
        redis.call('HSET', into, unpack(moving))
        redis.call('HDEL', from, unpack(fields))
    end
    return #fields
end

-- markov_counters(meta; suffix, field, delta, field, delta, …): adds each delta to its field of the hash, and
-- deletes fields that reach zero or less (the content hashes of learnt messages).
local function counters(keys, args)
    bind()
    local key = prefix_of(keys[1]) .. args[1]
    for i = 2, #args, 2 do
        if redis.call('HINCRBY', key, args[i], args[i + 1]) <= 0 then redis.call('HDEL', key, args[i]) end
    end
    return 1
end

redis.register_function('markov_fence', fence)
redis.register_function('markov_split', split)
redis.register_function('markov_counters', counters)
redis.register_function{ function_name = 'markov_generate', callback = generate, flags = { 'no-writes' } }
redis.register_function{ function_name = 'markov_state', callback = inspect_state, flags = { 'no-writes' } }
