-- Deletes the key only while it holds one of this claim's own values.
local held = redis.call("GET", KEYS[1])
if held == ARGV[1] or held == ARGV[2] then
  return redis.call("DEL", KEYS[1])
end
return 0
