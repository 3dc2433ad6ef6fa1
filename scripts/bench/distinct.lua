-- Scenario: every delivery carries alerts that medic has never seen.
--
--   wrk ... -s scripts/bench/distinct.lua -- ALERTS_PER_DELIVERY
--
-- Each request is a new Alertmanager webhook delivery of ALERTS_PER_DELIVERY
-- (default 1) distinct alerts: unique labels and fingerprint, built from the
-- wrk thread id and a per-thread counter.
local alerts = require("alerts")
alerts.install()

local per, seq, starts_at

function init(args)
   per = tonumber(args[1]) or 1
   seq = 0
   starts_at = alerts.starts_at()
end

function request()
   local list = {}
   for k = 1, per do
      list[k] = alerts.alert(id, seq * per + k - 1, seq + id)
   end
   seq = seq + 1
   return alerts.request(alerts.body(list, starts_at))
end
