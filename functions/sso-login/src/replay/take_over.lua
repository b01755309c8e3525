-- Takes a key over from an abandoned pending claim (or recognises a retry
-- of this very claim). KEYS[1] key; ARGV: new pending value, pending TTL
-- (ms), age after which a pending claim is abandoned (ms). Returns 1 when
-- taken, 0 when another login holds it, -1 when a login completed it.
local held = redis.call("GET", KEYS[1])
if held == ARGV[1] then return 1 end
if held and string.sub(held, 1, 8) == "pending:" then
  local age = tonumber(ARGV[2]) - redis.call("PTTL", KEYS[1])
  if age > tonumber(ARGV[3]) then
    redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
    return 1
  end
  return 0
end
if not held then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 1
end
return -1
