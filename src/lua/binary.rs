//! Binary values for protocols that tell text from bytes (Socket.IO
//! attachments): `mix.binary(s)` wraps a Lua string so that an emitted
//! argument travels as a binary attachment, and binary attachments a client
//! sends arrive in hooks as such values. `tostring(b)` gives the bytes back,
//! `#b` their length, `b:bytes()` the string.

use bytes::Bytes;
use mlua::{Lua, MetaMethod, Table, UserData, UserDataMethods};

/// A binary value; see the module documentation.
pub struct Binary(pub Bytes);

impl UserData for Binary {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("bytes", |lua, this, ()| lua.create_string(&this.0));
        m.add_meta_method(MetaMethod::ToString, |lua, this, ()| {
            lua.create_string(&this.0)
        });
        m.add_meta_method(MetaMethod::Len, |_, this, ()| Ok(this.0.len()));
        m.add_meta_method(MetaMethod::Eq, |_, this, other: mlua::AnyUserData| {
            Ok(other.borrow::<Binary>().is_ok_and(|o| o.0 == this.0))
        });
    }
}

/// Adds `mix.binary` to the `mix` table.
pub fn install(lua: &Lua, mix: &Table) -> mlua::Result<()> {
    mix.set(
        "binary",
        lua.create_function(|_, s: mlua::LuaString| {
            Ok(Binary(Bytes::copy_from_slice(&s.as_bytes())))
        })?,
    )
}
