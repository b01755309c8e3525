//! What other crates of the workspace share with `cargo xtask`: the list of
//! functions (the load tools read it too).

pub mod functions;
