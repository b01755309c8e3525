-- migrations/postgres/0005_sessions_that_end.sql, in SQLite's words.
ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;

CREATE TABLE revoked_tokens (
    jti       TEXT    PRIMARY KEY,
    user_id   INTEGER NOT NULL,
    token_exp INTEGER NOT NULL
);

CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (token_exp);
