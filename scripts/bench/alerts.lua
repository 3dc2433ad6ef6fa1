-- Shared helpers for the webhook intake benchmark (scripts/bench.sh).
--
-- Builds Alertmanager webhook payloads (version "4"), counts non-2xx
-- responses per wrk thread and prints one machine-readable result line when
-- the run is done. Loaded with require("alerts"); bench.sh puts this
-- directory on LUA_PATH.
--
-- Environment (set by bench.sh):
--   MEDIC_BENCH_TOKEN  bearer token sent in the Authorization header
--   MEDIC_BENCH_PATH   request path (default /webhook)

local M = {}

local format = string.format
local concat = table.concat

M.token = os.getenv("MEDIC_BENCH_TOKEN") or "bench-token"
M.path = os.getenv("MEDIC_BENCH_PATH") or "/webhook"

M.headers = {
   ["Content-Type"] = "application/json",
   ["Authorization"] = "Bearer " .. M.token,
}

local ALERTNAMES = {
   "HostHighCpuLoad", "HostOutOfMemory", "HostOutOfDiskSpace",
   "ServiceDown", "HighRequestLatency", "HighErrorRate",
   "TargetDown", "SystemdUnitFailed",
}
local SEVERITIES = { "warning", "critical" }

local function rfc3339(t)
   return os.date("!%Y-%m-%dT%H:%M:%S", t) .. ".000Z"
end

-- JSON string literal (labels here are plain ASCII; escape what JSON needs).
local function q(s)
   s = s:gsub('[%c"\\]', function(c)
      if c == '"' then return '\\"' end
      if c == "\\" then return "\\\\" end
      return format("\\u%04x", c:byte())
   end)
   return '"' .. s .. '"'
end
M.q = q

-- The labels of alert number n (n >= 0) of "thread" tid. Distinct (tid, n)
-- give distinct labels and fingerprints.
--   group: an index shared by the alerts of one delivery, chooses alertname
function M.alert(tid, n, group)
   local name = ALERTNAMES[(group % #ALERTNAMES) + 1]
   return {
      fingerprint = format("%04x%012x", tid % 0x10000, n % 0x1000000000000),
      alertname = name,
      instance = format("node-%d-%d:9100", tid, n),
      job = "node",
      severity = SEVERITIES[(group % #SEVERITIES) + 1],
   }
end

local function alert_json(a, starts_at)
   return concat({
      '{"status":"firing","labels":{',
      '"alertname":', q(a.alertname),
      ',"instance":', q(a.instance),
      ',"job":', q(a.job),
      ',"severity":', q(a.severity),
      '},"annotations":{',
      '"summary":', q(a.alertname .. " on " .. a.instance),
      ',"description":', q(a.alertname .. " has been firing on " .. a.instance
                               .. " for more than 5 minutes."),
      '},"startsAt":', q(starts_at),
      ',"endsAt":"0001-01-01T00:00:00Z"',
      ',"generatorURL":', q("http://prometheus.example:9090/graph?g0.expr=up&g0.tab=1"),
      ',"fingerprint":', q(a.fingerprint),
      '}',
   })
end

-- The JSON body of one delivery of `alerts` (a list from M.alert), all of
-- one group. Alertmanager groups them by alertname when there are several,
-- by alertname and instance when there is one (as config/alertmanager.yml).
function M.body(alerts, starts_at)
   local first = alerts[1]
   local parts = {}
   for i, a in ipairs(alerts) do
      parts[i] = alert_json(a, starts_at)
   end

   local group_labels, group_key
   if #alerts == 1 then
      group_labels = '{"alertname":' .. q(first.alertname)
         .. ',"instance":' .. q(first.instance) .. '}'
      group_key = format('{}:{alertname="%s", instance="%s"}',
                         first.alertname, first.instance)
   else
      group_labels = '{"alertname":' .. q(first.alertname) .. '}'
      group_key = format('{}:{alertname="%s"}', first.alertname)
   end

   local common_labels = '{"alertname":' .. q(first.alertname)
      .. ',"job":' .. q(first.job)
      .. ',"severity":' .. q(first.severity)
   if #alerts == 1 then
      common_labels = common_labels .. ',"instance":' .. q(first.instance)
   end
   common_labels = common_labels .. '}'

   local common_annotations = "{}"
   if #alerts == 1 then
      common_annotations = '{"summary":'
         .. q(first.alertname .. " on " .. first.instance) .. '}'
   end

   return concat({
      '{"receiver":"medic","status":"firing","alerts":[',
      concat(parts, ","),
      '],"groupLabels":', group_labels,
      ',"commonLabels":', common_labels,
      ',"commonAnnotations":', common_annotations,
      ',"externalURL":"http://alertmanager.example:9093"',
      ',"version":"4"',
      ',"groupKey":', q(group_key),
      ',"truncatedAlerts":0}',
   })
end

-- A POST of body to the webhook path.
function M.request(body)
   return wrk.format("POST", M.path, M.headers, body)
end

-- Start time of the run, the same in every thread (set by M.setup).
function M.starts_at()
   return rfc3339(tonumber(bench_start) or os.time())
end

-- wrk hooks shared by all scenarios ----------------------------------------

local threads = {}
local start = os.time()

-- setup() runs in the main Lua state once per thread: give each thread an
-- id and the common start time.
function M.setup(thread)
   thread:set("id", #threads)
   thread:set("bench_start", start)
   table.insert(threads, thread)
end

non2xx = 0
first_bad = nil

function M.response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_bad == nil then
         first_bad = tostring(status) .. " " .. tostring(body):sub(1, 200)
      end
   end
end

-- done() runs in the main state after the run: print one line that bench.sh
-- parses (latencies in microseconds).
function M.done(summary, latency, requests)
   local bad, sample = 0, nil
   for _, t in ipairs(threads) do
      bad = bad + (tonumber(t:get("non2xx")) or 0)
      sample = sample or t:get("first_bad")
   end
   local e = summary.errors
   io.write(format(
      "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d"
         .. " max_us=%d non2xx=%d connect_errors=%d read_errors=%d"
         .. " write_errors=%d timeouts=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, bad, e.connect, e.read, e.write, e.timeout))
   if sample then
      io.write("BENCH_FIRST_NON2XX " .. sample:gsub("\n", " ") .. "\n")
   end
end

-- Install the shared hooks as wrk's globals.
function M.install()
   setup = M.setup
   response = M.response
   done = M.done
end

return M
