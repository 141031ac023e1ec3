-- wrk script for the ksense QoS benchmark.
--
-- Load shape: every connection sends one request, waits for the response, then
-- pauses QOS_DELAY_MS before the next one (wrk's delay() hook). With the pause
-- much longer than a normal response time the offered rate is roughly
-- connections * 1000 / QOS_DELAY_MS requests/s: moderate and nearly fixed, not
-- wrk's default "as fast as possible" closed loop that saturates the CPUs by
-- itself. wrk starts the latency clock when the request is written, so the
-- pause is never counted as latency.
--
-- Regimes (qos.py --regime): "fixed" as above; "closed" is QOS_DELAY_MS=0,
-- wrk's own closed loop, which saturates the server; "bursty" keeps the same
-- mean rate but modulates it by the wall clock, the same for every connection:
-- for QOS_BURST_SHARE of each QOS_BURST_PERIOD_MS the pause is QOS_BURST_FACTOR
-- times shorter, and longer in the rest of the period so that the mean stays
-- (a load spike every period, as a cron job or a fan-out upstream makes).
--
-- Request mix: QOS_DYN_EVERY-th request goes to /dyn (a text file that nginx
-- gzips on every request: a little CPU work per request), the others to
-- /static.html (a small file from the page cache).
--
-- At the end one line "QOS {json}" gives this chunk's request count, errors and
-- latency percentiles in microseconds, read by qos.py.

local delay_ms = tonumber(os.getenv("QOS_DELAY_MS") or "10")
local dyn_every = tonumber(os.getenv("QOS_DYN_EVERY") or "4")
local burst_period = tonumber(os.getenv("QOS_BURST_PERIOD_MS") or "0")
local burst_share = tonumber(os.getenv("QOS_BURST_SHARE") or "0.2")
local burst_factor = tonumber(os.getenv("QOS_BURST_FACTOR") or "4")
local counter = 0

-- wrk's Lua has no wall clock finer than os.time(); LuaJIT's ffi reaches libc's.
local now_ms
if burst_period > 0 then
   local ffi = require("ffi")
   ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } qos_timespec;
      int clock_gettime(int clk, qos_timespec *ts);
   ]]
   local ts = ffi.new("qos_timespec")
   now_ms = function()
      ffi.C.clock_gettime(0, ts) -- CLOCK_REALTIME: every wrk thread and process in phase
      return (tonumber(ts.tv_sec) % 86400) * 1000 + tonumber(ts.tv_nsec) / 1e6
   end
end

local static_req, dyn_req

function init(args)
   static_req = wrk.format("GET", "/static.html")
   dyn_req = wrk.format("GET", "/dyn", { ["Accept-Encoding"] = "gzip" })
end

function request()
   counter = counter + 1
   if dyn_every > 0 and counter % dyn_every == 0 then
      return dyn_req
   end
   return static_req
end

function delay()
   if burst_period == 0 then
      return delay_ms
   end
   if now_ms() % burst_period < burst_share * burst_period then
      return delay_ms / burst_factor
   end
   -- the rest of the period at the rate that keeps the mean: s*f + (1-s)*c = 1
   return delay_ms * (1 - burst_share) / (1 - burst_share * burst_factor)
end

function done(summary, latency, requests)
   local e = summary.errors
   local p = {}
   for _, q in ipairs({ 50, 90, 99, 99.9 }) do
      p[#p + 1] = string.format('"%s":%d', tostring(q), latency:percentile(q))
   end
   io.write(string.format(
      'QOS {"duration_us":%d,"requests":%d,"bytes":%d,"errors":%d,"timeouts":%d,"status_errors":%d,' ..
      '"lat_mean_us":%.1f,"lat_max_us":%d,"p":{%s}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect + e.read + e.write + e.status + e.timeout, e.timeout, e.status,
      latency.mean, latency.max, table.concat(p, ",")))
end
