-- wrk script for W1: POST the JSON body in $BENCH_BODY_FILE with Codex-like headers
-- (session_id included: nginx drops it without underscores_in_headers), and print one
-- JSON summary line the bench parses. No response() hook: it would slow wrk down.
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] =
  "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.YmVuY2gtc2lnbmF0dXJlLW5vdC1yZWFs"
wrk.headers["chatgpt-account-id"] = "00000000-0000-4000-8000-000000000000"
wrk.headers["session_id"] = "0199a000-0000-7000-8000-000000000000"
wrk.headers["originator"] = "codex_exec"

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,'
      .. '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
    errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
