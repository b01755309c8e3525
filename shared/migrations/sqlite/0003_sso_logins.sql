-- migrations/postgres/0003_sso_logins.sql, in SQLite's words: the durable
-- record of single use, one row per GCGC token that logged in.
CREATE TABLE sso_logins (
    token_key  TEXT    PRIMARY KEY,
    attempt    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX sso_logins_by_expiry ON sso_logins (expires_at);
