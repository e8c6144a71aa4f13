-- examples/chat.lua: a chat room (CONNMIX's quick-start example, adapted).
--
-- Use it as a server's entry script:
--   servers: [{port: 6790, entry: lua/examples/chat.lua,
--              options: [{name: path, value: /chat}]}]
--
-- The client speaks JSON text frames:
--   {"op":"join","room_id":1002}  -> {"status":"success"}
--       joins the channel room:1002 and remembers the room in the context.
--       room_id is a positive integer (a JSON number, below 2^53). Joining
--       another room while in one leaves the old room first.
--   {"op":"send","msg":"Hello"}   -> {"status":"success"}
--       publishes to room:<id>, to every member including the sender (who
--       gets the message before the reply), the frame
--       {"event":"message","room_id":1002,"client_id":"<sender id>","msg":"Hello"}
--       built with mix.json_encode, so any msg text stays valid JSON.
--   {"op":"quit"}                 -> {"status":"success"}
--       leaves the room and forgets it.
--
-- Errors are {"code":n,"msg":"..."}; the connection stays open and usable:
--   1 Not in a room (send or quit before join)
--   2 Only text frames are accepted
--   3 Invalid JSON
--   4 Invalid room_id (missing, not a number, not a positive integer)
--   5 Missing msg (msg must be a non-empty string)
--   6 subscribe failed (the gateway's reason)
--   10 Unknown op
--
-- Backends broadcast to a room with the HTTP API:
--   curl -XPOST http://127.0.0.1:6789/v1/mesh/publish \
--        -d '{"c":"room:1002","d":"{\"event\":\"notice\",\"msg\":\"Welcome\"}"}'
-- and every member receives the d string as one text frame.

local SUCCESS = mix.json_encode({ status = "success" })

local function fail(conn, code, msg)
    conn:send(mix.json_encode({ code = code, msg = msg }))
end

-- The room id as it appears in the channel name (1002, not 1002.0 or
-- 1e+15), or nil if it is not a positive integer.
local function room_key(room_id)
    if type(room_id) == "number" and room_id >= 1 and room_id < 2 ^ 53
        and math.floor(room_id) == room_id then
        return string.format("%.0f", room_id)
    end
    return nil
end

local function join(conn, data)
    local key = room_key(data["room_id"])
    if key == nil then
        return fail(conn, 4, "Invalid room_id")
    end
    local old = conn:context_value("room")
    if old ~= nil and old ~= key then
        conn:unsubscribe("room:" .. old)
    end
    local err = conn:subscribe("room:" .. key)
    if err then
        conn:set_context_value("room", nil)
        conn:set_context_value("room_id", nil)
        return fail(conn, 6, err)
    end
    conn:set_context_value("room", key)
    conn:set_context_value("room_id", data["room_id"])
    conn:send(SUCCESS)
end

local function send(conn, data)
    local key = conn:context_value("room")
    if key == nil then
        return fail(conn, 1, "Not in a room")
    end
    local text = data["msg"]
    if type(text) ~= "string" or text == "" then
        return fail(conn, 5, "Missing msg")
    end
    local frame, err = mix.json_encode({
        event = "message",
        room_id = conn:context_value("room_id"),
        client_id = conn:client_id(),
        msg = text,
    })
    if err then
        -- not expected: mix.json_decode only yields valid UTF-8 strings
        return fail(conn, 5, "Invalid msg")
    end
    mix.mesh.publish("room:" .. key, frame)
    conn:send(SUCCESS)
end

local function quit(conn)
    local key = conn:context_value("room")
    if key == nil then
        return fail(conn, 1, "Not in a room")
    end
    conn:unsubscribe("room:" .. key)
    conn:set_context_value("room", nil)
    conn:set_context_value("room_id", nil)
    conn:send(SUCCESS)
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
    if op == "join" then
        return join(conn, data)
    elseif op == "send" then
        return send(conn, data)
    elseif op == "quit" then
        return quit(conn)
    end
    fail(conn, 10, "Unknown op")
end

-- The gateway removes a closed connection from its channels by itself.
function on_close(client_id, err, conn)
end
