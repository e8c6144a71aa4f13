-- entry.websocket.lua: the "user message center".
--
-- A client connects, sends {"op":"auth","token":"..."}; the script resolves
-- the token to a uid, keeps the uid in the connection's context, and on
-- {"op":"subscribe","channel":"@user"} joins the channel user:<uid>.
-- The backend then pushes with POST /v1/mesh/publish {"c":"user:<uid>","d":"..."}.
--
-- Resolving a token (server options):
--   jwt_secret  when set and the token looks like a JWT (three dot-separated
--               base64url parts), the token is verified locally with
--               mix.jwt.verify(token, jwt_secret) (HS256/384/512, exp and nbf
--               checked with 30 s leeway) and the uid is its "uid" claim (or
--               "sub" when there is no "uid"); no HTTP call is made.
--               Mint such tokens with `connmix token --uid 1001`.
--   auth_url    otherwise the script POSTs {"token":"..."} to auth_url (the
--               backend's API) and takes "uid" from the JSON reply (HTTP 200).
--               With jwt_secret and no auth_url, a token that is not a JWT is
--               refused (code 7).
--
-- Login at connect time: ws://host:6790/chat?token=<token> resolves the token
-- the same way during the handshake, stores the uid and joins user:<uid> at
-- once, before the upgrade is answered (no frame needed). A token that is
-- refused gets HTTP 401 "invalid token" instead of the upgrade; an auth
-- service that cannot be reached gets 503, a server with neither option 500.
-- Without ?token= (or with an empty one) the connection is accepted as
-- before and logs in with the auth message.
--
-- Replies: {"result":true} on success, {"code":n,"msg":"..."} on failure;
-- the connection stays open after an error. Codes:
--   1 Not Auth         2 not a text frame    3 invalid JSON
--   4 missing token    5 auth not configured 6 auth service unavailable
--   7 auth refused     8 invalid channel     9 subscribe failed
--   10 unknown op
-- {"op":"whoami"} answers {"result":{"client_id":"<id>","uid":<uid>}} (uid
-- only once logged in): the id a backend gives POST /v1/mesh/send.
-- {"op":"ping"} answers {"result":true} (a keep-alive for browsers, which
-- cannot send WebSocket pings; readTimeout closes silent connections).
-- History and recovery (channels in engine.history, e.g. 'user:*'):
-- {"op":"subscribe","channel":"@user","since":{"offset":n,"epoch":"e"}}
-- replays what was published after that position, before anything new, and
-- answers {"result":true,"recovered":true|false,"offset":n,"epoch":"e"}
-- (recovered false: the gap is no longer in history, reload your state).
-- Server option history_positions=true: every subscribe answers the
-- position, and each text push of a history channel arrives as
-- {"channel":"user:<uid>","offset":n,"epoch":"e","data":"<the push>"} so
-- a client knows its position (off by default: pushes are the bytes
-- published, as CONNMIX sends them).
-- A JWT that fails verification gets code 7 with the reason in msg, e.g.
-- {"code":7,"msg":"Auth failed: token expired"}.
--
-- The logic lives in lua/message_center.lua, a module loaded once per Lua VM
-- and shared by its connections (each connection runs only the hooks below).

local message_center = require("message_center")

function on_handshake(client_id, headers, server, conn)
    return message_center.on_handshake(client_id, headers, server, conn)
end

function on_message(msg, conn)
    return message_center.on_message(msg, conn)
end

function on_close(client_id, err, conn)
    return message_center.on_close(client_id, err, conn)
end
