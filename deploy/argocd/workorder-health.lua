-- Argo CD health of a workgate.io/v1alpha1 WorkOrder, from status.phase.
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

-- The operator explains every phase in the Ready condition's message.
local function explain(status, default)
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  return default
end

-- Where a QUEUED WorkOrder stands: the operator's account of it (which names the
-- position), else "queued at position 3: ConcurrencyLimit".
local function queued(status)
  local queue = status.queue
  if queue == nil then
    return explain(status, "Queued")
  end
  if queue.message ~= nil and queue.message ~= "" then
    return "queued: " .. queue.message
  end
  local text = "queued"
  if queue.position ~= nil then
    text = text .. " at position " .. tostring(queue.position)
  end
  if queue.reason ~= nil and queue.reason ~= "" then
    text = text .. ": " .. queue.reason
  end
  return text
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the workgate operator to queue the WorkOrder"
  return hs
end

-- A status computed from an older spec does not speak for the current one yet.
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the workgate operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == "SUCCEEDED" then
  hs.status = "Healthy"
  hs.message = explain(status, "Succeeded")
elseif phase == "FAILED" then
  hs.status = "Degraded"
  if status.lastError ~= nil and status.lastError ~= "" then
    hs.message = status.lastError
  else
    hs.message = explain(status, "Failed")
  end
elseif phase == "CANCELLED" then
  -- Stopped on request (spec.cancel). Degraded, as Argo CD rates a stopped or terminated
  -- Workflow (its phase is then Failed): the work did not happen, whoever stopped it.
  hs.status = "Degraded"
  hs.message = explain(status, "Cancelled")
elseif phase == "WAITING" then
  -- Waiting at a waitpoint for people to signal: paused on purpose, not stuck.
  hs.status = "Suspended"
  hs.message = explain(status, "Waiting at a waitpoint")
elseif phase == "SUSPENDED" then
  -- spec.suspend: held on purpose until someone resumes it, as a suspended Job.
  hs.status = "Suspended"
  hs.message = explain(status, "Suspended (spec.suspend)")
elseif phase == "QUEUED" then
  -- Its work type is at its concurrency limit: it runs when a slot frees up.
  hs.status = "Progressing"
  hs.message = queued(status)
elseif phase == "PENDING" or phase == "CLAIMED" then
  hs.status = "Progressing"
  hs.message = explain(status, phase)
elseif phase == "RETRY_PENDING" then
  hs.status = "Progressing"
  hs.message = explain(status, "Waiting to retry")
  if status.lastError ~= nil and status.lastError ~= "" then
    hs.message = hs.message .. "; last error: " .. status.lastError
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown WorkOrder phase " .. tostring(phase)
end
return hs
