-- Argo CD health of a workgate.io/v1alpha1 Waitpoint, from status.state and closeReason.
-- Argo CD runs this in gopher-lua (Lua 5.1) with only the base, table, package and a
-- safe os library open: no string library, so only operators and base functions here.
local hs = {}

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function explain(status, default)
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  return default
end

-- The operator's own summary (status.waitingFor: "approve: 1 more (approved: alice)"), or,
-- from an older operator, "waiting for signals approve, qa (1 of 2 received)", or for any
-- signal (empty = wildcard).
local function waiting_for(spec, status)
  if status.waitingFor ~= nil and status.waitingFor ~= "" then
    return "waiting for " .. status.waitingFor
  end
  local received = {}
  local count = 0
  if status.receivedSignals ~= nil then
    for _, s in ipairs(status.receivedSignals) do
      if s.name ~= nil and not received[s.name] then
        received[s.name] = true
        count = count + 1
      end
    end
  end
  local required = {}
  if spec ~= nil and spec.requiredSignalNames ~= nil then
    required = spec.requiredSignalNames
  end
  if #required == 0 then
    return "waiting for any signal"
  end
  local missing = {}
  local got = 0
  for _, name in ipairs(required) do
    if received[name] then
      got = got + 1
    else
      table.insert(missing, name)
    end
  end
  return "waiting for signals " .. table.concat(missing, ", ") .. " ("
    .. tostring(got) .. " of " .. tostring(#required) .. " received)"
end

local status = obj.status
if status == nil or status.state == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the workgate operator to record the waitpoint"
  return hs
end

local state = status.state
if state == "pending" or state == "active" then
  -- Suspended: the gate is in place and holds its WorkOrder until people act.
  hs.status = "Suspended"
  hs.message = waiting_for(obj.spec, status)
  if state == "pending" then
    hs.message = "Pending (the WorkOrder has not reached it yet), " .. hs.message
  end
  if status.expiresAt ~= nil then
    hs.message = hs.message .. "; expires at " .. status.expiresAt
  end
elseif state == "closed" then
  local reason = status.closeReason
  if reason == "Satisfied" then
    hs.status = "Healthy"
    hs.message = explain(status, "Satisfied")
  elseif reason == "Expired" then
    hs.status = "Degraded"
    hs.message = explain(status, "Expired before the required signals arrived")
  elseif reason == "Rejected" then
    -- A reviewer rejected it; its WorkOrder failed.
    hs.status = "Degraded"
    if status.rejection ~= nil and status.rejection.by ~= nil then
      hs.message = "Rejected by " .. status.rejection.by
    else
      hs.message = explain(status, "Rejected")
    end
  elseif reason == "Cancelled" then
    -- Healthy: cancelling a gate (its WorkOrder ended or was deleted) breaks nothing;
    -- the WorkOrder reports its own health.
    hs.status = "Healthy"
    hs.message = explain(status, "Cancelled")
  else
    hs.status = "Unknown"
    hs.message = "Closed with unknown reason " .. tostring(reason)
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown waitpoint state " .. tostring(state)
end
return hs
