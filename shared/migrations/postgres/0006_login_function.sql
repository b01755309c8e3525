-- The login's statement as a function of the database (sso-login's
-- users.rs LOGIN_SQL calls it): the same single statement, one round trip,
-- but planned once per server session instead of at every login.
-- The functions send each statement unnamed (one message, what a
-- transaction-mode pooler needs, with no prepared statement to pin a
-- session), so PostgreSQL parses and plans it every time; for this
-- three-part statement planning was about a third of its cost (pgbench,
-- extended against prepared: docs/architecture.md, "What the record
-- costs"). PL/pgSQL keeps the plan of its query per server session, which
-- is the pooler's, not the client's: nothing named crosses the pooler.
--
-- $1 external id, $2 email, $3 name, $4 now (microseconds), $5 token key,
-- $6 attempt, $7 token exp (seconds), $8 deadline (microseconds, as $4).
-- Writes the record and the user together, or nothing: nothing when the
-- deadline has passed on the database's clock (in_time false) or when the
-- token is already recorded (id null).
CREATE FUNCTION record_sso_login(
    p_external_id TEXT, p_email TEXT, p_name TEXT, p_now BIGINT,
    p_token_key TEXT, p_attempt TEXT, p_token_exp BIGINT, p_deadline BIGINT
) RETURNS TABLE (in_time BOOLEAN, id BIGINT, email TEXT, name TEXT, token_generation BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH clock AS MATERIALIZED (
        SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint < p_deadline AS in_time
    ), used AS (
        INSERT INTO sso_logins (token_exp, token_key, attempt)
        SELECT p_token_exp, p_token_key, p_attempt FROM clock WHERE clock.in_time
        ON CONFLICT (token_exp, token_key) DO NOTHING
        RETURNING 1
    ), upserted AS (
        INSERT INTO users (external_id, email, name, created_at, updated_at)
        SELECT p_external_id, p_email, p_name, p_now, p_now WHERE EXISTS (SELECT 1 FROM used)
        ON CONFLICT (external_id) DO UPDATE
        SET email = excluded.email, name = excluded.name, updated_at = excluded.updated_at
        RETURNING users.id, users.email, users.name, users.token_generation
    )
    SELECT clock.in_time, u.id, u.email, u.name, u.token_generation
    FROM clock LEFT JOIN upserted u ON true;
END
$$;
