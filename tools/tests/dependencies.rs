//! The operators' programs ship without the test support crate: nothing
//! tools links (its normal dependencies, with every feature, transitively)
//! is testkit, which starts throwaway servers and mints test tokens.

use std::process::Command;

#[test]
fn tools_does_not_link_testkit() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--package", "tools", "--all-features"])
        .args(["--edges", "normal", "--prefix", "none", "--format", "{p}"])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packages: Vec<&str> = tree.lines().filter_map(|l| l.split(' ').next()).collect();
    // The tree is the real one: tools and what it links, shared among them.
    assert_eq!(packages.first(), Some(&"tools"), "{tree}");
    assert!(packages.contains(&"shared"), "{tree}");
    assert!(
        !packages.contains(&"testkit"),
        "tools links testkit:\n{tree}"
    );
}
