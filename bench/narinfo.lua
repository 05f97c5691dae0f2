-- wrk script: request the narinfos listed in hashes.txt, round robin.
local hashes = {}
for line in io.lines(os.getenv("HASHES") or "hashes.txt") do hashes[#hashes + 1] = line end
local i = 0
request = function()
  i = i % #hashes + 1
  return wrk.format("GET", "/" .. hashes[i] .. ".narinfo")
end
local errors = 0
response = function(status) if status ~= 200 then errors = errors + 1 end end
done = function() io.write(string.format("non-200 responses: %d\n", errors)) end
