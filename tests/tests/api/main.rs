//! One test binary (one link), its modules by area.

mod browser;
mod conversations;
mod function_binaries;
mod lambda_events;
mod layers;
mod managed_postgres;
mod managed_redis;
mod metrics;
mod openapi;
mod platform;
mod postgres_pool;
mod properties;
mod replay_store;
mod secrets_and_verify;
mod sign_out;
mod sso;
