-- wrk script: create a new TheHive-style alert on every request (POST /api/v1/alert, a
-- fresh sourceRef each time), so that every request stores and audits a new alert. Run
-- with one wrk thread (-t1): the counter is per thread. RUN (set by cases-load) keeps
-- the references of two runs apart.
local n = 0
local run = os.getenv("RUN") or "0"
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. os.getenv("KEY"),
}

request = function()
  n = n + 1
  local body = string.format(
    '{"type": "bench", "source": "wrk", "sourceRef": "%s-%d", "title": "load test alert",'
      .. ' "description": "created by tests/bench/cases-load", "severity": 2}',
    run, n)
  return wrk.format("POST", "/api/v1/alert", headers, body)
end

-- Any answer but 201 is counted, so a run that fails cannot pass for a fast one.
local failed = 0
response = function(status)
  if status ~= 201 then
    failed = failed + 1
    if failed <= 3 then
      io.stderr:write("create-alert answered " .. status .. "\n")
    end
  end
end
