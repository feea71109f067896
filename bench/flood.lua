-- wrk script for bench/flood.sh. One of three roles, chosen by FLOOD_ROLE:
--   flood   : one client (one address, one email) sends as fast as it can, far over its limits;
--   normal  : customers at a normal rate, each from its own address with its own email
--             (FLOOD_DELAY_MS between requests on each connection);
--   spread  : FLOOD_REQUESTS requests in all, from FLOOD_ADDRESSES distinct addresses in turn,
--             then the thread stops. With FLOOD_SPREAD=invalid (the default) each is refused on
--             its fields (422) after both limiters counted it, so what grows is the limiters'
--             memory alone; with FLOOD_SPREAD=valid they are valid, and every address gets five
--             tickets for the one email stored (the per-email limit is per address and client).
-- Every request comes through the trusted proxy at 127.0.0.1, which names the client in
-- X-Forwarded-For.
local role = os.getenv("FLOOD_ROLE") or "flood"
local delay_ms = tonumber(os.getenv("FLOOD_DELAY_MS") or "0")
local total = tonumber(os.getenv("FLOOD_REQUESTS") or "1000000")
local addresses = tonumber(os.getenv("FLOOD_ADDRESSES") or "100000")
local seed = tonumber(os.getenv("FLOOD_SEED") or "0")
-- The spread role touches this file when its requests are all answered (wrk itself only stops
-- after its duration).
local done_file = os.getenv("FLOOD_DONE_FILE")

local function body(email)
  return '{"name":"Ada Lovelace","email":"' .. email .. '","type":"product",' ..
    '"subject":"Export button does nothing","message":"When I click Export SRT nothing happens and no file ' ..
    'downloads. Chrome 131 on Windows 11, project 4411."}'
end

-- The n-th address of 198.18.0.0/15 (the benchmarking range), n < 131072.
local function address(n)
  return string.format("198.%d.%d.%d", 18 + math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
end

local flood_body = body("flood@example.com")
-- A message under the 10-character minimum: counted by both limiters, then refused (422).
local invalid_body = '{"name":"Ada Lovelace","email":"flood@example.com","type":"product",' ..
  '"subject":"Export","message":"short"}'
local spread_body = (os.getenv("FLOOD_SPREAD") == "valid") and flood_body or invalid_body
local sent = 0
local statuses = {}

function request()
  sent = sent + 1
  local xff, b
  if role == "flood" then
    xff, b = "203.0.113.66", flood_body
  elseif role == "normal" then
    local n = seed + sent
    xff, b = address(n % 131072), body("customer" .. n .. "@example.org")
  else
    xff, b = address((sent - 1) % addresses), spread_body
  end
  return wrk.format("POST", "/api/v1/tickets",
    { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = xff }, b)
end

function delay()
  return delay_ms
end


local answered = 0
function response(status, headers, b)
  if role == "spread" then
    answered = answered + 1
    if answered == total and done_file then
      local f = io.open(done_file, "w")
      f:write("done\n")
      f:close()
      wrk.thread:stop()
    end
  end
end
