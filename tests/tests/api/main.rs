//! One test binary (one link), its modules by area.

mod function_binaries;
mod lambda_events;
mod layers;
