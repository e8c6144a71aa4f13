-- What a script may do: run once per VM, before any script, by sandbox.rs.
-- Arguments: aborting(), enter_coroutine(), leave_coroutine(),
-- system_access (engine.luavm.systemAccess).
local aborting, enter_coroutine, leave_coroutine, system_access = ...

local error, type, select, tostring = error, type, select, tostring
local raw_pcall, raw_xpcall = pcall, xpcall
local co_create, co_resume = coroutine.create, coroutine.resume
local raw_load, raw_loadfile = load, loadfile
local raw_collectgarbage = collectgarbage

-- The CPU budget's abort is not catchable: while a poll is aborting,
-- whatever pcall, xpcall or coroutine.resume caught is raised again.
local function rethrow(ok, ...)
    if not ok and aborting() then
        error((...), 0)
    end
    return ok, ...
end

pcall = function(...)
    return rethrow(raw_pcall(...))
end

xpcall = function(...)
    return rethrow(raw_xpcall(...))
end

-- Coroutines nest at most budget::MAX_COROUTINE_DEPTH deep.
local function resumed(ok, ...)
    leave_coroutine()
    return rethrow(ok, ...)
end

local function resume(co, ...)
    if type(co) ~= "thread" then
        return co_resume(co, ...) -- raises the usual argument error
    end
    enter_coroutine()
    return resumed(co_resume(co, ...))
end
coroutine.resume = resume

local function unwrap(ok, ...)
    if ok then
        return ...
    end
    error((...), 0)
end

coroutine.wrap = function(f)
    local co = co_create(f)
    return function(...)
        return unwrap(resume(co, ...))
    end
end

-- Text chunks only: bytecode can crash the VM.
local function text_only(f, err)
    if not f and type(err) == "string" and err:find("wrong mode", 1, true) then
        err = "cannot load a binary chunk: scripts load Lua text only"
    end
    return f, err
end

load = function(chunk, name, mode, ...)
    return text_only(raw_load(chunk, name, "t", ...))
end
loadstring = load

local function need_file(f, path)
    if type(path) ~= "string" then
        error("bad argument #1 to '" .. f .. "' (file name expected: scripts cannot read stdin)", 3)
    end
end

loadfile = function(path, mode, ...)
    need_file("loadfile", path)
    return text_only(raw_loadfile(path, "t", ...))
end

dofile = function(path)
    need_file("dofile", path)
    local f, err = text_only(raw_loadfile(path, "t"))
    if not f then
        error(err, 2)
    end
    return f()
end

-- `require` reads Lua files as text too; C modules only with systemAccess.
local loaders = package.loaders
loaders[2] = function(name)
    local path, err = package.searchpath(name, package.path)
    if not path then
        return err
    end
    local f, lerr = text_only(raw_loadfile(path, "t"))
    if not f then
        error("error loading module '" .. name .. "' from file '" .. path .. "':\n\t" .. lerr, 3)
    end
    return f
end

local function refuse(name, why)
    return function()
        error(name .. " is not available to scripts (" .. why .. ")", 2)
    end
end

os.exit = refuse("os.exit", "it would stop the gateway")

-- A stopped collector only ends in the memory limit.
collectgarbage = function(opt, ...)
    if opt == "stop" or opt == "setpause" or opt == "setstepmul" then
        error("collectgarbage(\"" .. opt .. "\") is not available to scripts", 2)
    end
    return raw_collectgarbage(opt, ...)
end

-- Compiled traces never run the count hook that enforces the CPU budget.
if jit then
    local safe_jit = {
        version = jit.version,
        version_num = jit.version_num,
        os = jit.os,
        arch = jit.arch,
        off = function() end,
        flush = function() end,
        status = function()
            return false
        end,
        on = refuse("jit.on", "the CPU budget needs the interpreter"),
    }
    jit = safe_jit
    package.loaded.jit = safe_jit
    for _, m in ipairs({ "jit.util", "jit.profile", "jit.opt" }) do
        package.loaded[m] = nil
        package.preload[m] = nil
    end
end

if not system_access then
    local why = "engine.luavm.systemAccess is false"
    for _, f in ipairs({ "execute", "remove", "rename", "tmpname", "getenv", "setlocale" }) do
        os[f] = refuse("os." .. f, why)
    end
    for k in pairs(io) do
        io[k] = refuse("io." .. k, why)
    end
    package.loadlib = refuse("package.loadlib", why)
    for i = #loaders, 3, -1 do
        loaders[i] = nil
    end
end
