-- wrk script for bench/join_load.py: replays pre-built LBI JoinReq bodies (one JSON per line), split
-- between wrk threads, optionally paced per connection, and counts Success answers.
local counter = 0
local threads = {}

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   bodies = {}
   idx = 0
   success = 0
   other = 0
   wrapped = 0
   local nthreads = tonumber(os.getenv("JSD_BENCH_THREADS"))
   local i = 0
   for line in io.lines(os.getenv("JSD_BENCH_BODIES")) do
      if i % nthreads == id then table.insert(bodies, line) end
      i = i + 1
   end
   pace = tonumber(os.getenv("JSD_BENCH_DELAY_MS") or "0")
   headers = {["Content-Type"] = "application/json",
              ["Authorization"] = "Bearer " .. os.getenv("JSD_BENCH_TOKEN")}
end

function request()
   idx = idx + 1
   if idx > #bodies then
      idx = 1
      wrapped = wrapped + 1
   end
   return wrk.format("POST", "/", headers, bodies[idx])
end

function delay()
   return pace
end

function response(status, headers, body)
   if string.find(body, '"ResultCode":"Success"', 1, true) then
      success = success + 1
   else
      other = other + 1
   end
end

function done(summary, latency, requests)
   local s, o, w = 0, 0, 0
   for _, t in ipairs(threads) do
      s = s + t:get("success")
      o = o + t:get("other")
      w = w + t:get("wrapped")
   end
   io.write(string.format("JSD success=%d other=%d wrapped=%d requests=%d duration_us=%d errors=%d\n",
      s, o, w, summary.requests, summary.duration,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
   io.write(string.format("JSD p50=%d p90=%d p99=%d max=%d\n",
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
