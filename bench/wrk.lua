-- wrk script of the podpatterns benchmark (bench/loadgen.py drives it).
--
-- Parameters come from the environment, because wrk's main Lua state (which runs done()) never sees
-- the script's arguments:
--   BENCH_BODIES   comma-separated files, each one compact AdmissionReview (sent in rotation)
--   BENCH_EXPECT   a substring every good answer contains (checked on every response)
--   BENCH_RATE     offered requests/s over all threads; 0 or unset = closed loop, as fast as answered
--   BENCH_THREADS  wrk's -t (the rate is split over threads)
--   BENCH_OUT      where done() writes its JSON summary
--   BENCH_VARY     a marker in the (one) body: every request gets its own number of the marker's length
--                  there (the thread's index, then a counter), so no two requests carry the same pod
--
-- Fixed rate: each thread has a schedule of send slots (one every threads/rate ms); every connection
-- that is free claims the next slot and waits for it (wrk's delay(), rounded to whole ms, so arrivals
-- jitter by up to a millisecond but their average rate is exact). Latency is measured by wrk from the
-- moment a request is written. A slot claimed after its time means every connection was busy (the
-- server is saturated): such late sends are counted, with the worst lag, so a point of the curve that
-- suffered coordinated omission is reported as such rather than hidden.

local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local function split(s)
  local out = {}
  for part in string.gmatch(s or "", "[^,]+") do
    out[#out + 1] = part
  end
  return out
end

local expect = os.getenv("BENCH_EXPECT") or '"allowed":true'
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1") or 1

-- As the API server sends them: compact JSON, POST /mutate?timeout=10s (the path is in the URL).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, */*"
wrk.headers["User-Agent"] = "kube-apiserver-admission"

local files = split(os.getenv("BENCH_BODIES"))
local vary = os.getenv("BENCH_VARY") or ""
local varies = false
local parts = {} -- per body: a ready request, or the text before and after the marker
for i, path in ipairs(files) do
  local body = read_file(path)
  local at = vary ~= "" and string.find(body, vary, 1, true) or nil
  if at then
    parts[i] = { string.sub(body, 1, at - 1), string.sub(body, at + #vary) }
    varies = true
  else
    parts[i] = wrk.format(nil, nil, nil, body)
  end
end
if #files == 1 and not varies then
  wrk.body = read_file(files[1]) -- one body: wrk builds the request once (static)
elseif #files > 0 then
  local digits = "%02d%0" .. math.max(#vary - 2, 1) .. "d"
  local n = 0
  function request()
    n = n + 1
    local part = parts[(n - 1) % #parts + 1]
    if type(part) == "string" then
      return part
    end
    return wrk.format(nil, nil, nil, part[1] .. string.format(digits, thread_index or 0, n) .. part[2])
  end
end

-- Per thread (globals, so that done() can read them with thread:get).
bad = 0
late = 0
max_lag = 0

function response(status, headers, body)
  if status ~= 200 or not string.find(body, expect, 1, true) then
    bad = bad + 1
  end
end

if rate > 0 then
  local interval = 1000.0 * nthreads / rate
  local next_slot = nil
  function delay()
    local now = now_ms()
    if next_slot == nil then
      next_slot = now
    end
    local wait = next_slot - now
    next_slot = next_slot + interval
    if wait < 0 then
      if -wait > 1 then
        late = late + 1
      end
      if -wait > max_lag then
        max_lag = -wait
      end
      return 0
    end
    return math.floor(wait + 0.5)
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_index", #threads)
end

function done(summary, latency, requests)
  local total_bad, total_late, worst_lag = 0, 0, 0
  for _, t in ipairs(threads) do
    total_bad = total_bad + (t:get("bad") or 0)
    total_late = total_late + (t:get("late") or 0)
    worst_lag = math.max(worst_lag, t:get("max_lag") or 0)
  end
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format(
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"bad_answer":%d}',
      e.connect, e.read, e.write, e.status, e.timeout, total_bad
    ),
    string.format('"late_sends":%d', total_late),
    string.format('"max_lag_ms":%.3f', worst_lag),
    string.format(
      '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99.9":%d,"p99.99":%d}',
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency:percentile(99.99)
    ),
  }
  local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  f:write("{" .. table.concat(parts, ",") .. "}\n")
  f:close()
end
