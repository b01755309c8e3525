-- migrations/postgres/0004_sso_logins_by_expiry.sql, in SQLite's words
-- (a primary key cannot be altered: the table is rebuilt).
CREATE TABLE sso_logins_rebuilt (
    token_exp INTEGER NOT NULL,
    token_key TEXT    NOT NULL,
    attempt   TEXT    NOT NULL,
    PRIMARY KEY (token_exp, token_key)
);
INSERT INTO sso_logins_rebuilt (token_exp, token_key, attempt)
    SELECT expires_at / 1000000 - 30, token_key, attempt FROM sso_logins;
DROP TABLE sso_logins;
ALTER TABLE sso_logins_rebuilt RENAME TO sso_logins;
