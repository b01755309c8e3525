//! The scenarios, one per part of the table, each a method of the bench:
//! `/health` against bare axum (`health`), sso-login against pgbench of
//! its statement and the sum of its parts (`login`), conversations against
//! pgbench of their queries, and through PgBouncer against direct
//! (`conversations`, on the data of `conversations_data`), every route
//! from one connection with latency in front of the stores, priced on
//! Lambda (`latency`), start-up (`start_up`), sizes and memory (`sizes`).

mod conversations;
mod conversations_data;
mod health;
mod latency;
mod login;
mod sizes;
mod start_up;
