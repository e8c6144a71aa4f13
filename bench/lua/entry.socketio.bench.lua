-- entry.socketio.bench.lua: BENCH ONLY. connmix's Socket.IO server speaking
-- the protocol of bench/socketio/server.js, so the same bench clients run
-- against both: after CONNECT,
--   emit("login", {token}, ack)   -> the token is resolved exactly as the
--                                    shipped scripts do (message_center.lua:
--                                    auth_url), the socket joins user:<uid>,
--                                    ack {result: true}
--   emit("subscribe", channel, ack) -> joins the channel ("@user" = user:<uid>),
--                                    ack {result: true}
-- Publishes reach the clients as event "msg" (POST /v1/mesh/publish with "e":"msg").

local message_center = require("message_center")

local function login(msg, conn)
    local token = type(msg.data) == "table" and msg.data.token or nil
    if type(token) ~= "string" or token == "" then
        return { code = 4, msg = "Missing token" }
    end
    local uid, code, err = message_center.resolve_uid(token)
    if uid == nil then
        return { code = code, msg = err }
    end
    conn:set_context_value("uid", uid)
    err = conn:subscribe("user:" .. message_center.uid_string(uid))
    if err then
        return { code = 9, msg = err }
    end
    return { result = true }
end

local function subscribe(msg, conn)
    local uid = conn:context_value("uid")
    if uid == nil then
        return { code = 1, msg = "Not Auth" }
    end
    local ch = msg.data
    if ch == "@user" then
        ch = "user:" .. message_center.uid_string(uid)
    end
    if type(ch) ~= "string" or ch == "" then
        return { code = 8, msg = "Invalid channel" }
    end
    local err = conn:subscribe(ch)
    return err and { code = 9, msg = err } or { result = true }
end

function on_message(msg, conn)
    if msg.type ~= "event" then
        return
    elseif msg.event == "login" then
        return login(msg, conn)
    elseif msg.event == "subscribe" then
        return subscribe(msg, conn)
    end
end
