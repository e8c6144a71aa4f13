-- socketio_echo.lua: the reference behaviour the official Socket.IO and
-- Engine.IO protocol test suites expect of the server under test
-- (test-suite/ of socketio/socket.io-protocol and socketio/engine.io-protocol;
-- README "Socket.IO" says how to run them against examples/socketio-conformance.yaml).
--
-- Socket.IO (protocol: socketio):
--   - namespaces "/" and "/custom" accept every CONNECT and then emit
--     "auth" with the CONNECT payload ({} without one); any other namespace
--     is refused with "Invalid namespace";
--   - "message" is echoed back as "message-back" with the same arguments
--     (binary ones included);
--   - "message-with-ack" is acknowledged with its own arguments.
-- Engine.IO (protocol: engineio): every message is echoed back as it came.

local namespaces = { ["/"] = true, ["/custom"] = true }

function on_connect(info, conn)
    if info == nil or type(info) ~= "table" then
        return -- protocol: engineio passes only the connection
    end
    if not namespaces[info.namespace] then
        return false, "Invalid namespace"
    end
    conn:emit_to(info.namespace, "auth", info.auth or {})
end

function on_message(msg, conn)
    if msg.type == "text" or msg.type == "binary" then
        conn:send(msg.data, msg.type)
    elseif msg.type == "event" and msg.event == "message" then
        conn:emit_to(msg.namespace, "message-back", unpack(msg.args, 1, msg.args.n))
    elseif msg.type == "event" and msg.event == "message-with-ack" then
        return unpack(msg.args, 1, msg.args.n)
    end
end
