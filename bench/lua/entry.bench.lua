-- entry.bench.lua: BENCH ONLY. Runs the shipped lua/entry.websocket.lua
-- ("user message center") unchanged in this connection's environment, and
-- adds one thing in front of it: subscribe/unsubscribe with a plain channel
-- name (no "@", e.g. "group:7") joins that channel as is, after auth. The
-- idle-memory scenario of connmix-bench uses it to put every connection on
-- two channels ("@user" -> user:<uid>, and "group:<n>"), so the memory it
-- measures is the shipped script's plus one channel.

-- The shipped chunk is compiled once per VM and run under this connection's
-- environment (as the gateway runs entry scripts), so its hooks and helpers
-- are this connection's, exactly as when it is the entry script itself.
-- Its path is the server option `shipped_entry` (bench/connmix.bench.yaml).
local shipped = package.loaded["bench.shipped_entry"]
if shipped == nil then
    shipped = assert(loadfile(mix.server.option("shipped_entry")))
    package.loaded["bench.shipped_entry"] = shipped
end
setfenv(shipped, getfenv(1))
shipped()

local shipped_on_message = on_message

function on_message(msg, conn)
    if msg.type == "text" then
        local data = mix.json_decode(msg.data)
        local ch = type(data) == "table" and data.channel
        if type(ch) == "string" and ch ~= "" and not string.find(ch, "@", 1, true)
            and (data.op == "subscribe" or data.op == "unsubscribe") then
            if conn:context_value("uid") == nil then
                return conn:send('{"code":1,"msg":"Not Auth"}')
            end
            local err
            if data.op == "subscribe" then
                err = conn:subscribe(ch)
            else
                err = conn:unsubscribe(ch)
            end
            if err then
                return conn:send(mix.json_encode({ code = 9, msg = err }))
            end
            return conn:send('{"result":true}')
        end
    end
    return shipped_on_message(msg, conn)
end
