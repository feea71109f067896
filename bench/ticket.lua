-- wrk script: POST a realistic ticket to /api/v1/tickets. Without an Idempotency-Key every request
-- stores a new ticket. Optional pacing: BENCH_DELAY_MS waits before each request on a connection,
-- which holds the offered rate near connections * 1000 / (delay + latency).
wrk.method = "POST"
wrk.path = "/api/v1/tickets"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name":"Ada Lovelace","email":"ada@example.com","type":"product",' ..
  '"subject":"Export button does nothing","message":"When I click Export SRT nothing happens and no file ' ..
  'downloads. Chrome 131 on Windows 11, project 4411.","account":"acct-4411"}'

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
function delay()
  return delay_ms
end

local non202 = 0
function response(status, headers, body)
  if status ~= 202 then
    non202 = non202 + 1
  end
end
