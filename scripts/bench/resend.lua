-- Scenario: Alertmanager resending alerts medic already knows (dedup path).
--
--   wrk ... -s scripts/bench/resend.lua -- SET_SIZE
--
-- Every delivery carries one alert out of a fixed set of SET_SIZE (default
-- 100) alerts, the same in every wrk thread (same labels, fingerprint and
-- startsAt), so after the first round every delivery is a resend.
local alerts = require("alerts")
alerts.install()

local bodies, seq

function init(args)
   local size = tonumber(args[1]) or 100
   local starts_at = alerts.starts_at()
   bodies = {}
   for i = 0, size - 1 do
      bodies[i + 1] = alerts.request(
         alerts.body({ alerts.alert(0xbeef, i, i) }, starts_at))
   end
   -- Threads start at different points of the set.
   seq = (id * 37) % size
end

function request()
   local r = bodies[(seq % #bodies) + 1]
   seq = seq + 1
   return r
end
