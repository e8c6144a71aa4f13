-- examples/barrage.lua: video barrage (danmaku), CONNMIX's "video barrage"
-- example adapted to this gateway.
--
-- Every video has one channel, <video_id>@video (e.g. 1001@video). The
-- video id is 1 to 64 letters, digits, "_" or "-". A viewer may watch
-- several videos at once.
--
-- The client speaks JSON text frames:
--   {"op":"subscribe","channel":"1001@video"}    -> {"result":true}
--       joins 1001@video (again is harmless).
--   {"op":"unsubscribe","channel":"1001@video"}  -> {"result":true}
--       leaves it (leaving a video one does not watch is harmless).
--   {"op":"send","channel":"1001@video","msg":"666"} -> {"result":true}
--       only for a video this connection is subscribed to: publishes
--       {"event":"barrage","channel":"1001@video","client_id":"<sender id>","msg":"666"}
--       (built with mix.json_encode) to every viewer of the video, the sender
--       included (who gets the line before the reply). msg is a non-empty
--       string of at most 256 bytes.
--
-- Errors are {"code":n,"msg":"..."}; the connection stays open and usable:
--   2 Only text frames are accepted
--   3 Invalid JSON
--   4 Missing msg (absent, not a string, or empty)
--   5 Not subscribed (send to a video one is not watching)
--   6 Message too long
--   8 Invalid channel (not "<video_id>@video")
--   9 subscribe failed (the gateway's reason)
--   10 Unknown op
--
-- Backends broadcast to every viewer of a video with the HTTP API:
--   curl -XPOST http://127.0.0.1:6789/v1/mesh/publish \
--        -d '{"c":"1001@video","d":"{\"event\":\"barrage\",\"msg\":\"Welcome\"}"}'
-- and every viewer receives the d string as one text frame.

local MAX_MSG = 256

local function reply(conn, t)
    conn:send(mix.json_encode(t))
end

local function fail(conn, code, msg)
    reply(conn, { code = code, msg = msg })
end

-- The channel if it names a video ("<video_id>@video"), else nil.
local function video_channel(channel)
    if type(channel) ~= "string" then
        return nil
    end
    local parts = mix.str_split(channel, "@")
    if table.getn(parts) ~= 2 or parts[2] ~= "video" then
        return nil
    end
    local id = parts[1]
    if id == "" or string.len(id) > 64 or not string.find(id, "^[%w_%-]+$") then
        return nil
    end
    return channel
end

-- The set of videos this connection watches, kept in its context.
local function watching(conn)
    local set = conn:context_value("videos")
    if set == nil then
        set = {}
        conn:set_context_value("videos", set)
    end
    return set
end

local function subscribe(conn, data)
    local channel = video_channel(data["channel"])
    if channel == nil then
        return fail(conn, 8, "Invalid channel")
    end
    local err = conn:subscribe(channel)
    if err then
        return fail(conn, 9, err)
    end
    watching(conn)[channel] = true
    reply(conn, { result = true })
end

local function unsubscribe(conn, data)
    local channel = video_channel(data["channel"])
    if channel == nil then
        return fail(conn, 8, "Invalid channel")
    end
    conn:unsubscribe(channel)
    watching(conn)[channel] = nil
    reply(conn, { result = true })
end

local function send(conn, data)
    local channel = video_channel(data["channel"])
    if channel == nil then
        return fail(conn, 8, "Invalid channel")
    end
    local text = data["msg"]
    if type(text) ~= "string" or text == "" then
        return fail(conn, 4, "Missing msg")
    end
    if string.len(text) > MAX_MSG then
        return fail(conn, 6, "Message too long")
    end
    if not watching(conn)[channel] then
        return fail(conn, 5, "Not subscribed")
    end
    local line = mix.json_encode({
        event = "barrage",
        channel = channel,
        client_id = conn:client_id(),
        msg = text,
    })
    mix.mesh.publish(channel, line)
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
    if op == "subscribe" then
        return subscribe(conn, data)
    elseif op == "unsubscribe" then
        return unsubscribe(conn, data)
    elseif op == "send" then
        return send(conn, data)
    end
    fail(conn, 10, "Unknown op")
end

-- The gateway removes a closed connection from its channels by itself.
function on_close(client_id, err, conn)
end
