-- wrk script for bench/heartbeats.py: pings spread over many heartbeat tokens.
--
--   wrk -t1 -c64 -d10s --latency -s bench/heartbeats.lua http://127.0.0.1:8080 -- TOKENS METHOD BODY_BYTES
--
-- TOKENS is a file with one token a line; each connection's next request
-- takes the next token, round robin, so every token is pinged in turn.
-- METHOD is POST (a text/plain body of BODY_BYTES bytes) or GET. done()
-- prints one line the bench parses:
--   pings: sent S answered A ok O
-- sent counts requests handed to wrk (each written once while no socket
-- fails), answered the responses read, ok those with status 200; sent minus
-- answered were in flight when wrk stopped (the server still stores them).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file, method, size = args[1], args[2] or "POST", tonumber(args[3] or "16")
  local headers, body = {}, nil
  if method == "POST" then
    body = string.rep("x", size)
    headers["Content-Type"] = "text/plain"
  end
  requests = {}
  for token in io.lines(file) do
    requests[#requests + 1] = wrk.format(method, "/api/v1/heartbeats/" .. token, headers, body)
  end
  total = #requests
  index = 0
  sent, answered, ok = 0, 0, 0
end

function request()
  index = index % total + 1
  sent = sent + 1
  return requests[index]
end

function response(status, headers, body)
  answered = answered + 1
  if status == 200 then
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local s, a, o = 0, 0, 0
  for _, thread in ipairs(threads) do
    s = s + thread:get("sent")
    a = a + thread:get("answered")
    o = o + thread:get("ok")
  end
  io.write(string.format("pings: sent %d answered %d ok %d\n", s, a, o))
end
