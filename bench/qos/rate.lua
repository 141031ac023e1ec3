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
-- Request mix: QOS_DYN_EVERY-th request goes to /dyn (a text file that the server
-- gzips on every request: a little CPU work per request), the others to
-- /static.html (a small file from the page cache).
--
-- At the end one line "QOS {json}" gives this chunk's request count, errors and
-- latency percentiles in microseconds, read by qos.py: "p" as wrk reports them,
-- and "p_raw" from the latencies wrk measured (see raw_percentiles).

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

-- wrk (4.x, Debian's included) "corrects" its latency histogram for
-- coordinated omission before done() sees it (stats_correct in wrk.c): each
-- latency v longer than twice the expected interval e = runtime / (requests per
-- connection) adds samples at v - e, v - 2e, ... down to e. In a closed loop
-- (e ~ 1.6 ms) a stall adds many made-up samples, so wrk's P99 is not a
-- percentile of its requests. The correction is exact and invertible: for
-- m > e, corrected[m] = raw[m] + raw[m + e] + raw[m + 2e] + ..., so
-- raw[m] = corrected[m] - corrected[m + e]. wrk's Lua API walks the histogram
-- in O(range) per value, so it is read through LuaJIT's ffi (the userdata holds
-- a pointer to wrk's `stats`: count, limit, min, max, data[]); any mismatch
-- with the API's own min, max and request count returns nil, never a guess.
local function raw_percentiles(summary, latency, qs)
   local conns = tonumber(os.getenv("QOS_CONNECTIONS") or "0")
   local ok, ffi = pcall(require, "ffi")
   if not ok or conns <= 0 then
      return nil
   end
   local st = ffi.cast("uint64_t **", latency)[0]
   local mn, mx = tonumber(st[2]), tonumber(st[3])
   if mn ~= latency.min or mx ~= latency.max or mx >= tonumber(st[1]) then
      return nil
   end
   local data = st + 4
   local per_conn = math.floor(summary.requests / conns)
   local e = per_conn > 0 and math.floor(summary.duration / per_conn) or math.huge
   local raw, n = {}, 0
   for m = mn, mx do
      local c = tonumber(data[m])
      if m > e and m + e <= mx then
         c = c - tonumber(data[m + e])
      end
      if c < 0 then
         return nil
      end
      if c > 0 then
         raw[m] = c
         n = n + c
      end
   end
   -- every completed request is recorded once, but those past wrk's limit
   -- (counted as timeouts)
   if n == 0 or n > summary.requests or n < summary.requests - summary.errors.timeout then
      return nil
   end
   local out, total, k = {}, 0, 1
   for m = mn, mx do
      total = total + (raw[m] or 0)
      -- wrk's own rank rule (stats_percentile)
      while k <= #qs and total >= math.floor(qs[k] / 100 * n + 0.5 + 0.5) do
         out[k] = m
         k = k + 1
      end
   end
   return out, n, e
end

local QS = { 50, 90, 99, 99.9 }

local function json_percentiles(vals)
   local p = {}
   for i, q in ipairs(QS) do
      p[#p + 1] = string.format('"%s":%d', tostring(q), vals[i])
   end
   return "{" .. table.concat(p, ",") .. "}"
end

function done(summary, latency, requests)
   local e = summary.errors
   local p = {}
   for i, q in ipairs(QS) do
      p[i] = latency:percentile(q)
   end
   local raw, n_raw, interval = raw_percentiles(summary, latency, QS)
   local raw_json = "null"
   if raw then
      raw_json = string.format('%s,"raw_samples":%d,"correction_interval_us":%d', json_percentiles(raw), n_raw,
         interval == math.huge and -1 or interval)
   end
   io.write(string.format(
      'QOS {"duration_us":%d,"requests":%d,"bytes":%d,"errors":%d,"timeouts":%d,"status_errors":%d,' ..
      '"lat_mean_us":%.1f,"lat_max_us":%d,"p":%s,"p_raw":%s}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect + e.read + e.write + e.status + e.timeout, e.timeout, e.status,
      latency.mean, latency.max, json_percentiles(p), raw_json))
end
