//! One test binary (one link), its modules by area.

mod conversations;
mod function_binaries;
mod lambda_events;
mod layers;
mod openapi;
mod properties;
mod secrets_and_verify;
mod sso;
