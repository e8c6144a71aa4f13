-- entry.socketio.lua: the user message center for Socket.IO clients
-- (a server entry with `protocol: socketio`).
--
-- A client connects as Socket.IO clients do:
--   io("http://host:port", { query: { token } })   or   io(url, { auth: { token } })
-- The token (auth.token first, else ?token=) is resolved to a uid exactly as
-- entry.websocket.lua does it (message_center.lua): a JWT checked with the
-- server option `jwt_secret`, else POSTed to the option `auth_url`.
-- A missing or refused token refuses the CONNECT: the client's
-- `connect_error` carries the reason ("Missing token", "Auth failed: ...",
-- "Auth service unavailable", "Auth not configured").
--
-- Accepted, the socket joins the user's room: the server option `user_room`
-- (default `user:{uid}`; `{uid}` alone gives the plain user-id rooms
-- python-socketio apps use). Rooms are channels: in namespace "/" room R is
-- channel R, in namespace N it is channel "N#R". So a backend reaches every
-- open tab of user 1001 with
--   POST /v1/mesh/publish {"c":"user:1001","e":"following notify","d":"{...}"}
-- or with python-socketio's `mgr.emit(event, data, room="user:1001")`
-- through an `engine.emitters` queue.
--
-- Events (answered through the client's ack callback):
--   socket.emit("subscribe",   { channel: "public:news" }, ack) -> { result: true } or { code, msg }
--   socket.emit("unsubscribe", { channel: "public:news" }, ack)
-- "@user" is the user's own room; other channels must start with the server
-- option `public_prefix` (default `public:`), so no client can read another
-- user's room. Codes: 8 invalid channel, 9 subscribe failed.

local message_center = require("message_center")

local user_room = mix.server.option("user_room") or "user:{uid}"
local public_prefix = mix.server.option("public_prefix") or "public:"

-- The channel of room `room` in namespace `ns`.
local function channel_of(ns, room)
    if ns == "/" then
        return room
    end
    return ns .. "#" .. room
end

local function own_room(uid)
    local s = user_room:gsub("{uid}", (message_center.uid_string(uid):gsub("%%", "%%%%")))
    return s
end

function on_connect(info, conn)
    local token = type(info.auth) == "table" and info.auth.token or nil
    if type(token) ~= "string" or token == "" then
        token = info.query.token
    end
    if type(token) ~= "string" or token == "" then
        return false, "Missing token"
    end
    local uid, _, msg = message_center.resolve_uid(token)
    if uid == nil then
        return false, msg
    end
    conn:set_context_value("uid", uid)
    local err = conn:subscribe(channel_of(info.namespace, own_room(uid)))
    if err then
        return false, "subscribe failed: " .. err
    end
end

local function channel_op(msg, conn)
    local arg = msg.data
    local name = type(arg) == "table" and arg.channel or arg
    local uid = conn:context_value("uid")
    if name == "@user" and uid ~= nil then
        name = own_room(uid)
    elseif type(name) ~= "string" or name:sub(1, #public_prefix) ~= public_prefix or #name == #public_prefix then
        return { code = 8, msg = "Invalid channel" }
    end
    local ch = channel_of(msg.namespace, name)
    local err
    if msg.event == "subscribe" then
        err = conn:subscribe(ch)
    else
        err = conn:unsubscribe(ch)
    end
    if err then
        return { code = 9, msg = err }
    end
    return { result = true }
end

function on_message(msg, conn)
    if msg.type == "event" and (msg.event == "subscribe" or msg.event == "unsubscribe") then
        return channel_op(msg, conn)
    end
end
