-- examples/exchange.lua: an exchange market-data and account stream,
-- CONNMIX's "exchange" example adapted to this gateway.
--
-- Channels:
--   public   <symbol>@<stream>, stream one of depth, trade, ticker
--            (e.g. btcusdt@depth); symbol is 1 to 32 lowercase letters or
--            digits. Anyone may subscribe, no auth needed.
--   private  @balance and @order, for the authenticated user only. The
--            connection joins balance:<uid> (or order:<uid>); a client can
--            never name another user's private channel itself, since
--            "<x>@balance" and "balance:<uid>" are refused as invalid.
--
-- The client speaks JSON text frames:
--   {"op":"auth","token":"..."}                -> {"result":true}
--       POSTs {"token":"..."} (built by mix.json_encode) to the server option
--       auth_url; a 200 answer {"uid":1001} authenticates the connection as
--       uid 1001. Authenticating again as another user first leaves the
--       previous user's private channels; a failed auth changes nothing.
--   {"op":"subscribe","channel":"btcusdt@depth"}   -> {"result":true}
--   {"op":"subscribe","channel":"@balance"}        -> {"result":true}
--       joins balance:<uid>; before auth {"code":1,"msg":"Not Auth"}.
--   {"op":"unsubscribe","channel":...}             -> {"result":true}
--
-- Errors are {"code":n,"msg":"..."}; the connection stays open and usable:
--   1 Not Auth              2 Only text frames are accepted
--   3 Invalid JSON          4 Missing token
--   5 Auth not configured   6 Auth service unavailable
--   7 Auth failed           8 Invalid channel
--   9 subscribe failed      10 Unknown op
--
-- The backend pushes with the HTTP API, e.g. a depth update to everyone
-- watching the book and a balance change to every connection of user 1001:
--   curl -XPOST http://127.0.0.1:6789/v1/mesh/publish \
--        -d '{"c":"btcusdt@depth","d":"{\"stream\":\"btcusdt@depth\",\"bids\":[[\"100.1\",\"2\"]]}"}'
--   curl -XPOST http://127.0.0.1:6789/v1/mesh/publish \
--        -d '{"c":"balance:1001","d":"{\"stream\":\"@balance\",\"asset\":\"USDT\",\"free\":\"10.5\"}"}'
-- Each subscriber receives the d string as one text frame.

local PUBLIC = { depth = true, trade = true, ticker = true }
local PRIVATE = { balance = true, order = true }

local function reply(conn, t)
    conn:send(mix.json_encode(t))
end

local function fail(conn, code, msg)
    reply(conn, { code = code, msg = msg })
end

-- uid as it appears in a channel name: 1001, not 1001.0 or 1e+15.
local function uid_string(uid)
    if type(uid) == "number" then
        return string.format("%.0f", uid)
    end
    return tostring(uid)
end

local function leave_private(conn, uid)
    for kind, _ in pairs(PRIVATE) do
        conn:unsubscribe(kind .. ":" .. uid_string(uid))
    end
end

local function auth(conn, data)
    local token = data["token"]
    if type(token) ~= "string" or token == "" then
        return fail(conn, 4, "Missing token")
    end
    local auth_url = mix.server.option("auth_url")
    if auth_url == nil or auth_url == "" then
        mix.log(mix.WARN, "auth_url option is not set")
        return fail(conn, 5, "Auth not configured")
    end
    local resp, err = mix.http.request("POST", auth_url, {
        body = mix.json_encode({ token = token }),
        headers = { ["Content-Type"] = "application/json" },
        timeout = 10,
    })
    if err then
        mix.log(mix.WARN, "auth request failed: " .. err)
        return fail(conn, 6, "Auth service unavailable")
    end
    if resp["status_code"] ~= 200 then
        return fail(conn, 7, "Auth failed")
    end
    local result = mix.json_decode(resp["body"])
    if type(result) ~= "table" then
        return fail(conn, 7, "Auth failed")
    end
    local uid = result["uid"]
    if (type(uid) ~= "number" and type(uid) ~= "string") or uid_string(uid) == "" then
        return fail(conn, 7, "Auth failed")
    end
    local old = conn:context_value("uid")
    if old ~= nil and uid_string(old) ~= uid_string(uid) then
        leave_private(conn, old)
    end
    conn:set_context_value("uid", uid)
    reply(conn, { result = true })
end

-- Resolves a requested channel to the gateway channel name.
-- Returns name, or nil, code, msg.
local function resolve(conn, channel)
    if type(channel) ~= "string" then
        return nil, 8, "Invalid channel"
    end
    local parts = mix.str_split(channel, "@")
    if table.getn(parts) ~= 2 then
        return nil, 8, "Invalid channel"
    end
    local who, stream = parts[1], parts[2]
    if who == "" and PRIVATE[stream] then
        local uid = conn:context_value("uid")
        if uid == nil then
            return nil, 1, "Not Auth"
        end
        return stream .. ":" .. uid_string(uid)
    end
    if PUBLIC[stream] and string.len(who) <= 32 and string.find(who, "^[%l%d]+$") then
        return channel
    end
    return nil, 8, "Invalid channel"
end

local function channel_op(conn, op, data)
    local name, code, why = resolve(conn, data["channel"])
    if name == nil then
        return fail(conn, code, why)
    end
    if op == "subscribe" then
        local err = conn:subscribe(name)
        if err then
            return fail(conn, 9, err)
        end
    else
        conn:unsubscribe(name)
    end
    reply(conn, { result = true })
end

function on_message(msg, conn)
    conn = conn or mix.websocket()
    if msg["type"] ~= "text" then
        return fail(conn, 2, "Only text frames are accepted")
    end
    local data, err = mix.json_decode(msg["data"])
    if err or type(data) ~= "table" then
        return fail(conn, 3, "Invalid JSON")
    end
    local op = data["op"]
    if op == "auth" then
        return auth(conn, data)
    elseif op == "subscribe" or op == "unsubscribe" then
        return channel_op(conn, op, data)
    end
    fail(conn, 10, "Unknown op")
end

-- The gateway removes a closed connection from its channels by itself.
function on_close(client_id, err, conn)
end
