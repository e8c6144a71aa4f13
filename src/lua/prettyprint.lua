-- prettyprint: `require("prettyprint")`, as CONNMIX entry scripts start with,
-- makes print() show tables with their contents instead of "table: 0x...".
-- Built into the gateway (package.preload), so copied scripts work as is.
local raw_print = print
local tostring, type, pairs, concat = tostring, type, pairs, table.concat

local function dump(v, depth, seen)
    if type(v) ~= "table" then
        if type(v) == "string" then
            return string.format("%q", v)
        end
        return tostring(v)
    end
    if seen[v] then
        return "<cycle>"
    end
    if depth > 8 then
        return "{...}"
    end
    seen[v] = true
    local parts = {}
    for k, val in pairs(v) do
        parts[#parts + 1] = "[" .. dump(k, depth + 1, seen) .. "] = " .. dump(val, depth + 1, seen)
    end
    seen[v] = nil
    return "{" .. concat(parts, ", ") .. "}"
end

print = function(...)
    local out = {}
    for i = 1, select("#", ...) do
        out[i] = dump((select(i, ...)), 0, {})
    end
    raw_print(concat(out, "\t"))
end

return { dump = function(v) return dump(v, 0, {}) end }
