-- Sessions that end early (SPEC.md, "Ending sessions"). Both are read by the
-- protected routes' own statements (shared::token_standing_sql!), so the
-- check costs no round trip.
--   users.token_generation  "sign out everywhere" adds one: every API token
--                           carries the generation it was issued at, and one
--                           below the user's is ended. A counter, not a time:
--                           exact within a second and whatever the clocks of
--                           the instances say. Adding a column with a
--                           constant default rewrites nothing.
--   revoked_tokens          one signed-out token each (its `jti`) until its own
--                           `exp` (seconds since the epoch); expired rows are
--                           swept by sso-login along the expiry index.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;

CREATE TABLE revoked_tokens (
    jti       TEXT   PRIMARY KEY,
    user_id   BIGINT NOT NULL,
    token_exp BIGINT NOT NULL
);

CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (token_exp);
