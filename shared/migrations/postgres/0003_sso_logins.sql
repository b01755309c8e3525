-- The durable record of single use: one row per GCGC token that logged in,
-- written by the login's own statement together with the user upsert (no
-- round trip of its own). Redis holds the claim and refuses most replays in
-- one command, but a managed Redis may lose a mark (eviction at maxmemory,
-- a failover to a replica that had not yet received it, a restart without
-- persistence); this row does not, so such a replay is refused here.
--   token_key   the replay key without the deployment's prefix
--               (sso:jti:<sha-256> or sso:token:<sha-256>), never a token
--   attempt     the login's claim value: a login whose answer was lost
--               deletes its own row, and only its own
--   expires_at  microseconds since the Unix epoch after which the token can
--               no longer be accepted; logins reap a few expired rows each
-- A new, empty table: created in one short transaction, no lock on the others.
CREATE TABLE sso_logins (
    token_key  TEXT   PRIMARY KEY,
    attempt    TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX sso_logins_by_expiry ON sso_logins (expires_at);
