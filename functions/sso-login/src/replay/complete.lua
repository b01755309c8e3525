-- Completes a claim: its own pending value becomes the done value with the
-- full TTL, only if the claim is no older than the caller's budget; a
-- claim it already completed (a retry whose first reply was lost) is
-- recognised. KEYS[1] key; ARGV: pending value, done value, pending TTL
-- (ms), budget (ms), full TTL (s).
local held = redis.call("GET", KEYS[1])
if held == ARGV[2] then return 1 end
if held ~= ARGV[1] then return 0 end
local age = tonumber(ARGV[3]) - redis.call("PTTL", KEYS[1])
if age > tonumber(ARGV[4]) then return 0 end
redis.call("SET", KEYS[1], ARGV[2], "EX", ARGV[5])
return 1
