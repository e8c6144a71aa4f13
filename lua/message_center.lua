-- message_center.lua: the logic of the "user message center" (the protocol
-- is documented at the top of entry.websocket.lua, which uses this module).
--
-- A module, not part of the entry script: `require` loads it once per Lua VM
-- and every connection of that VM shares its functions, so a connection
-- costs only the three small hooks of the entry script (about 2 KiB less per
-- connection than defining these helpers in the entry script itself). Hot
-- reload watches this file too.

local M = {}

local mix_log = mix.log
local mix_DEBUG = mix.DEBUG
local mix_WARN = mix.WARN

local function reply(conn, t)
    local s = mix.json_encode(t)
    conn:send(s)
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

-- Three dot-separated base64url parts (the signature may be empty).
local function looks_like_jwt(token)
    return string.find(token, "^[%w_%-]+%.[%w_%-]+%.[%w_%-]*$") ~= nil
end

-- Token -> uid. Returns uid, or nil, code, msg (codes as above).
local function resolve_uid(token)
    local secret = mix.server.option("jwt_secret")
    local has_secret = secret ~= nil and secret ~= ""
    if has_secret and looks_like_jwt(token) then
        local claims, err = mix.jwt.verify(token, secret)
        if claims == nil then
            mix_log(mix_DEBUG, "jwt refused: " .. tostring(err))
            return nil, 7, "Auth failed: " .. tostring(err)
        end
        local uid = claims["uid"]
        if uid == nil then
            uid = claims["sub"]
        end
        if (type(uid) ~= "number" and type(uid) ~= "string") or uid == "" then
            return nil, 7, "Auth failed: token has no uid"
        end
        return uid
    end
    local auth_url = mix.server.option("auth_url")
    if auth_url == nil or auth_url == "" then
        if has_secret then
            -- Only JWTs can be checked here, and this is not one.
            return nil, 7, "Auth failed"
        end
        mix_log(mix_WARN, "neither jwt_secret nor auth_url option is set")
        return nil, 5, "Auth not configured"
    end
    local body = mix.json_encode({ token = token })
    local resp, err = mix.http.request("POST", auth_url, {
        body = body,
        headers = { ["Content-Type"] = "application/json" },
        timeout = 10,
    })
    if err then
        mix_log(mix_WARN, "auth request failed: " .. err)
        return nil, 6, "Auth service unavailable"
    end
    if resp["status_code"] ~= 200 then
        mix_log(mix_DEBUG, "auth refused with status " .. resp["status_code"])
        return nil, 7, "Auth failed"
    end
    local result = mix.json_decode(resp["body"])
    if type(result) ~= "table" or result["uid"] == nil then
        return nil, 7, "Auth failed"
    end
    return result["uid"]
end

local function auth(conn, data)
    local token = data["token"]
    if type(token) ~= "string" or token == "" then
        return fail(conn, 4, "Missing token")
    end
    local uid, code, msg = resolve_uid(token)
    if uid == nil then
        return fail(conn, code, msg)
    end
    conn:set_context_value("uid", uid)
    reply(conn, { result = true })
end

-- HTTP status of a refused handshake, by error code.
local handshake_status = {
    [5] = { 500, "auth not configured" },
    [6] = { 503, "auth service unavailable" },
    [7] = { 401, "invalid token" },
}

-- ?token=<token> on the connect URL logs in and joins user:<uid> before
-- the upgrade is answered; no token: accepted, log in by message later.
function M.on_handshake(client_id, headers, server, conn)
    conn = conn or mix.websocket()
    local uri = server and server["RequestUri"] or ""
    if string.find(uri, "?", 1, true) == nil then
        return true
    end
    local query = mix.parse_str(uri)
    local token = type(query) == "table" and query["token"] or nil
    if type(token) ~= "string" or token == "" then
        return true
    end
    local uid, code = resolve_uid(token)
    if uid == nil then
        local refusal = handshake_status[code] or { 401, "invalid token" }
        return false, refusal[1], refusal[2]
    end
    conn:set_context_value("uid", uid)
    local err = conn:subscribe("user:" .. uid_string(uid))
    if err then
        mix_log(mix_WARN, "handshake subscribe failed: " .. err)
        return false, 500, "subscribe failed"
    end
    return true
end

-- {"result":true}, or code 9 with the subscribe/unsubscribe error.
local function answer(conn, err)
    if err then
        return fail(conn, 9, err)
    end
    reply(conn, { result = true })
end

local function channel(conn, op, data)
    local channel_raw = data["channel"]
    if type(channel_raw) ~= "string" then
        return fail(conn, 8, "Invalid channel")
    end
    local parts = mix.str_split(channel_raw, "@")
    if table.getn(parts) ~= 2 or parts[2] ~= "user" then
        return fail(conn, 8, "Invalid channel")
    end
    local uid = conn:context_value("uid")
    if uid == nil then
        return fail(conn, 1, "Not Auth")
    end
    local name = "user:" .. uid_string(uid)
    if op == "unsubscribe" then
        return answer(conn, conn:unsubscribe(name))
    end
    -- Recovery (engine.history): with "since" (or the history_positions
    -- option on), the channel is joined with a position and the reply says
    -- where the client now is; the publications it missed arrive first.
    local since = data["since"]
    local positions = mix.server.option("history_positions") == "true"
    if since == nil and not positions then
        return answer(conn, conn:subscribe(name))
    end
    if since ~= nil and type(since) ~= "table" then
        return fail(conn, 9, "invalid since: use {\"offset\":n,\"epoch\":\"e\"}")
    end
    local err, info = conn:subscribe(name, { since = since, positions = positions })
    if err then
        return fail(conn, 9, err)
    end
    reply(conn, { result = true, recovered = info.recovered, offset = info.offset, epoch = info.epoch })
end

-- Shared with entry.socketio.lua.
M.resolve_uid = resolve_uid
M.uid_string = uid_string

function M.on_message(msg, conn)
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
    elseif op == "ping" then
        -- Keep-alive from clients that cannot send WebSocket pings (browsers).
        return reply(conn, { result = true })
    elseif op == "whoami" then
        -- The connection's id (for POST /v1/mesh/send) and its user, if any.
        return reply(conn, { result = { client_id = conn:client_id(), uid = conn:context_value("uid") } })
    elseif op == "subscribe" or op == "unsubscribe" then
        return channel(conn, op, data)
    end
    fail(conn, 10, "Unknown op")
end

function M.on_close(client_id, err, conn)
    if err then
        mix_log(mix_DEBUG, "closed: " .. err)
    end
end

return M
