-- Scenario: a steady delivery rate instead of maximum throughput.
--
--   wrk -tTHREADS -cCONNECTIONS ... -s scripts/bench/rate.lua -- RATE THREADS CONNECTIONS
--
-- One distinct alert per delivery, like distinct.lua. wrk has no rate
-- option, so the delay() hook paces requests: each thread keeps a schedule
-- of RATE/THREADS requests per second and every connection waits for the
-- next free slot before sending. Latency is measured from the moment a
-- request is written, so the waiting is not counted in it. Without LuaJIT's
-- ffi (no wall clock), each connection waits a fixed CONNECTIONS/RATE
-- instead, which runs slightly below RATE.
local alerts = require("alerts")
alerts.install()

local ok, ffi = pcall(require, "ffi")
local now_ms
if ok then
   ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } medic_bench_timespec;
      int clock_gettime(int clk_id, medic_bench_timespec *tp);
   ]]
   local ts = ffi.new("medic_bench_timespec")
   local CLOCK_MONOTONIC = 1
   now_ms = function()
      ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
      return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
   end
end

local seq, starts_at, interval_ms, fixed_ms, next_slot

function init(args)
   local rate = tonumber(args[1]) or 1000
   local threads = tonumber(args[2]) or 1
   local connections = tonumber(args[3]) or 10
   seq = 0
   starts_at = alerts.starts_at()
   interval_ms = 1000 * threads / rate
   fixed_ms = 1000 * connections / rate
   next_slot = nil
end

function delay()
   if not now_ms then
      return fixed_ms
   end
   local now = now_ms()
   if next_slot == nil or next_slot < now - 10 * interval_ms then
      -- First request, or fell far behind: do not burst to catch up.
      next_slot = now
   end
   next_slot = next_slot + interval_ms
   local wait = next_slot - now
   if wait < 0 then
      wait = 0
   end
   return math.floor(wait)
end

function request()
   local a = alerts.alert(id, seq, seq + id)
   seq = seq + 1
   return alerts.request(alerts.body({ a }, starts_at))
end
