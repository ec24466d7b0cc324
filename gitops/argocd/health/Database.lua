-- Argo CD health check for azora.io/v1alpha1 Database (resource.customizations.health.azora.io_Database).
-- Reads status.observedGeneration and the standard Ready condition. Lua 5.1 subset (gopher-lua).
hs = {}
local gen = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then gen = obj.metadata.generation end
local st = obj.status
if st == nil or st.observedGeneration == nil or st.observedGeneration < gen then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. gen
  return hs
end
local ready = nil
for _, c in ipairs(st.conditions or {}) do
  if c.type == "Ready" then ready = c end
end
local reason, msg = "", ""
if ready ~= nil then
  reason = ready.reason or ""
  msg = ready.message or ""
  if msg == "" then msg = reason elseif reason ~= "" then msg = reason .. ": " .. msg end
end
-- Ready=False reasons that no retry fixes: an invalid spec, a missing reference, a capability not delivered.
local r = reason
if ready ~= nil and ready.status == "False" and (string.find(r, "^Invalid") or string.find(r, "NotFound$")
    or r == "ResidencyViolation" or r == "MalformedSpec" or r == "ObjectStoreMissing" or r == "NotYetSupported"
    or r == "PolicyMismatch" or r == "SplitBrain") then
  hs.status = "Degraded"
  hs.message = msg
  return hs
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the Ready condition"
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = msg
else
  hs.status = "Progressing"
  hs.message = msg
end
return hs
