-- wrk script: PATCH the case with a new title on every request, so that every request
-- is a real, audited write. Run with one wrk thread (-t1): the counter is per thread.
local n = 0
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. os.getenv("KEY"),
}

request = function()
  n = n + 1
  return wrk.format("PATCH", nil, headers, '{"title": "load ' .. n .. '"}')
end
