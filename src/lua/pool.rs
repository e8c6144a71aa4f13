//! The Lua VMs of one worker thread. A worker starts with one VM and adds
//! another whenever every VM it has holds [`CONNECTIONS_PER_VM`]
//! connections; a VM that empties (other than the first) is dropped.
//!
//! Why more than one VM per thread: mlua keeps every live Lua handle (a
//! suspended hook's coroutine, the arguments it holds) in one auxiliary
//! stack per VM, and LuaJIT caps that stack at 8,000 slots. Bounding the
//! connections per VM bounds the hooks that can be suspended in it at once,
//! so thousands of clients waiting in `wait_context_value` or on HTTP stay
//! far from the cap. A VM costs about 100 KiB, so at 1,000 connections per
//! VM this is about 100 bytes per connection.

use super::{LuaRuntime, ScriptError, WorkerCtx};
use crate::config::Config;
use crate::mesh::Mesh;
use crate::script::ScriptStore;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// Connections one VM takes before the worker opens another.
pub const CONNECTIONS_PER_VM: usize = 1000;

/// See the module documentation.
pub struct VmPool {
    vms: RefCell<Vec<Rc<PooledVm>>>,
    mesh: Arc<Mesh>,
    config: Arc<Config>,
    http: reqwest::Client,
    store: Arc<ScriptStore>,
}

/// A VM and how many connections it holds.
pub struct PooledVm {
    pub vm: LuaRuntime,
    conns: Cell<usize>,
}

/// A connection's claim on a VM; gives its place back when dropped.
pub struct VmLease {
    vm: Rc<PooledVm>,
    pool: Rc<VmPool>,
}

impl std::ops::Deref for VmLease {
    type Target = LuaRuntime;
    fn deref(&self) -> &LuaRuntime {
        &self.vm.vm
    }
}

impl Drop for VmLease {
    fn drop(&mut self) {
        self.vm.conns.set(self.vm.conns.get() - 1);
        if self.vm.conns.get() == 0 {
            let mut vms = self.pool.vms.borrow_mut();
            if vms.len() > 1 {
                vms.retain(|v| !Rc::ptr_eq(v, &self.vm));
            }
        }
    }
}

impl VmPool {
    /// Creates the pool with its first VM (so script errors show at start).
    pub fn new(
        mesh: Arc<Mesh>,
        config: Arc<Config>,
        http: reqwest::Client,
        store: Arc<ScriptStore>,
    ) -> Result<Rc<Self>, ScriptError> {
        let pool = Rc::new(Self {
            vms: RefCell::new(Vec::new()),
            mesh,
            config,
            http,
            store,
        });
        let first = pool.create()?;
        pool.vms.borrow_mut().push(first);
        Ok(pool)
    }

    fn create(&self) -> Result<Rc<PooledVm>, ScriptError> {
        let vm = LuaRuntime::new(
            WorkerCtx {
                mesh: self.mesh.clone(),
                config: self.config.clone(),
                http: self.http.clone(),
            },
            self.store.clone(),
        )?;
        Ok(Rc::new(PooledVm {
            vm,
            conns: Cell::new(0),
        }))
    }

    /// A VM with room for one more connection.
    pub fn acquire(self: &Rc<Self>) -> Result<VmLease, ScriptError> {
        let existing = self
            .vms
            .borrow()
            .iter()
            .find(|v| v.conns.get() < CONNECTIONS_PER_VM)
            .cloned();
        let vm = match existing {
            Some(v) => v,
            None => {
                let v = self.create()?;
                self.vms.borrow_mut().push(v.clone());
                v
            }
        };
        vm.conns.set(vm.conns.get() + 1);
        Ok(VmLease {
            vm,
            pool: self.clone(),
        })
    }

    /// VMs open now.
    pub fn len(&self) -> usize {
        self.vms.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.vms.borrow().is_empty()
    }

    /// Memory the VMs' Lua heaps use now, in bytes.
    pub fn used_memory(&self) -> usize {
        self.vms
            .borrow()
            .iter()
            .map(|v| v.vm.lua().used_memory())
            .sum()
    }
}
