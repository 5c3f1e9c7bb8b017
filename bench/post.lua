-- wrk script for wg-fleet's benchmark: POST with an optional JSON body, and a
-- machine-readable summary line (latencies in microseconds) for bench/bench.py.
--   BENCH_BODY=''   -> POST without a body (register: the server makes the key pair)
--   BENCH_BODY='{}' -> POST with a JSON body (ping)
wrk.method = "POST"
local body = os.getenv("BENCH_BODY") or ""
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %.0f, "duration_us": %.0f, "p50_us": %.0f, "p99_us": %.0f, '
      .. '"max_us": %.0f, "connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, '
      .. '"timeout": %.0f}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
