-- sso_logins keyed by the token's expiry first: one index instead of two,
-- and each login's entry lands beside the others of its second (tokens
-- expire in the order they are issued) instead of at a random page of a
-- random-keyed index. Measured with pgbench (docs/architecture.md, "What
-- the record costs"). The sweep of expired records reads the same index.
--   token_exp  the token's own `exp` (seconds since the Unix epoch), read
--              from the token, so the key does not move with the leeway
--              that verification allows; 0003 stored exp + 30 s (the
--              leeway then) in microseconds, converted here exactly.
ALTER TABLE sso_logins DROP CONSTRAINT sso_logins_pkey;
DROP INDEX sso_logins_by_expiry;
ALTER TABLE sso_logins RENAME COLUMN expires_at TO token_exp;
UPDATE sso_logins SET token_exp = token_exp / 1000000 - 30;
ALTER TABLE sso_logins ADD PRIMARY KEY (token_exp, token_key);
