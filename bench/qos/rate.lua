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
-- Request mix: QOS_DYN_EVERY-th request goes to /dyn (a text file that nginx
-- gzips on every request: a little CPU work per request), the others to
-- /static.html (a small file from the page cache).
--
-- At the end one line "QOS {json}" gives this chunk's request count, errors and
-- latency percentiles in microseconds, read by qos.py.

local delay_ms = tonumber(os.getenv("QOS_DELAY_MS") or "10")
local dyn_every = tonumber(os.getenv("QOS_DYN_EVERY") or "4")
local counter = 0

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
   return delay_ms
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
