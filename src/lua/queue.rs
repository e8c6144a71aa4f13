//! `mix.queue.push(topic, data)`: hands a Lua value (as JSON) to the
//! backends consuming `topic` through the WebSocket API's `queue.pop`.
//! Returns the topic's depth after the push, or `nil, err` when a bound
//! (`engine.luavm.queue.topicSize` / `maxTopics`) refuses it.

use super::{WorkerCtx, current, json};
use crate::queue::QueuedMessage;
use mlua::{Lua, Table, Value};

pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "push",
        lua.create_async_function(|lua, (topic, data): (String, Value)| async move {
            let err = |e: String| Ok((Value::Nil, Value::String(lua.create_string(e)?)));
            let data = match json::to_json(&data, json::max_size(&lua))? {
                Ok(d) => d,
                Err(e) => return err(format!("cannot queue this value: {e}")),
            };
            let mesh = lua
                .app_data_ref::<WorkerCtx>()
                .ok_or_else(|| mlua::Error::runtime("no worker context"))?
                .mesh
                .clone();
            let client_id = current()
                .map(|c| c.client.id.to_string())
                .unwrap_or_default();
            let msg = QueuedMessage {
                topic,
                node: mesh.hub.node(),
                client_id,
                data,
            };
            match mesh.queues.push(msg).await {
                Ok(n) => Ok((Value::Number(n as f64), Value::Nil)),
                Err(e) => err(e.to_string()),
            }
        })?,
    )?;
    Ok(t)
}
