use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Bench;
use crate::report::{Row, Target};

/// The published reference for a Lambda zip and its cold start.
const MINIMAL_LAMBDA: &str = "minimal axum Lambda 0.89 MB zipped, init 18.5 ms at 512 MB arm64 \
     (fulgurion.com, 'Rust on AWS Lambda: cold start')";
/// The zip size each function must stay under, MiB.
const ZIP_LIMIT_MIB: f64 = 5.0;

impl Bench<'_> {
    pub fn sizes_and_memory(&mut self) -> anyhow::Result<()> {
        println!("== sizes (reference: {MINIMAL_LAMBDA})");
        for name in &xtask::functions::of_this_workspace() {
            let binary = self.bin_dir.join(name);
            let bytes = std::fs::read(&binary)?;
            // SQLite's file header string: in a binary that links SQLite.
            let sqlite = bytes.windows(15).any(|w| w == b"SQLite format 3");
            println!(
                "   {name:>14}: binary {:.2} MiB{}",
                mib(bytes.len() as u64),
                if sqlite {
                    " (links SQLite: not a deploy build)"
                } else {
                    ""
                }
            );
            let Some((zip_bytes, what)) = self.lambda_zip(name)? else {
                continue;
            };
            self.rows.push(Row {
                figure: format!("{name}: Lambda zip ({what})"),
                function: format!("{:.2} MiB", mib(zip_bytes)),
                reference: format!("{ZIP_LIMIT_MIB:.0} MiB (minimal axum Lambda: 0.89 MB)"),
                ratio: mib(zip_bytes) / ZIP_LIMIT_MIB,
                target: Target::AtMost(1.0),
            });
            print_crates(name, &binary);
        }
        for (name, kib) in self.peak_rss_kib.clone() {
            self.rows.push(Row {
                figure: format!("{name}: peak RSS under load"),
                function: format!("{:.1} MB", kib as f64 / 1024.0),
                reference: "16 MB".into(),
                ratio: kib as f64 / 1024.0 / 16.0,
                target: Target::AtMost(1.0),
            });
        }
        Ok(())
    }

    /// A function's Lambda zip: the arm64 deploy build's (`make
    /// build-lambda`) when there is one, else this build's binary, stripped
    /// and zipped here: an approximation (x86_64 code, and this build's
    /// features). Its size and what it is.
    fn lambda_zip(&mut self, name: &str) -> anyhow::Result<Option<(u64, &'static str)>> {
        let target_dir = self.bin_dir.parent().unwrap_or(Path::new("target"));
        let built = [
            PathBuf::from(format!("dist/lambda/{name}/bootstrap.zip")),
            target_dir.join("lambda").join(name).join("bootstrap.zip"),
        ];
        if let Some((zip, meta)) = built
            .iter()
            .find_map(|zip| Some((zip, std::fs::metadata(zip).ok()?)))
        {
            println!("   {name:>14}: arm64 Lambda zip {}", zip.display());
            return Ok(Some((meta.len(), "arm64")));
        }
        let dir = self.work.join(format!("zip-{name}"));
        std::fs::create_dir_all(&dir)?;
        let bootstrap = dir.join("bootstrap");
        std::fs::copy(self.bin_dir.join(name), &bootstrap)?;
        // The release profile strips already; `strip` makes sure.
        let _ = Command::new("strip").arg(&bootstrap).status();
        let zip = dir.join("bootstrap.zip");
        let zipped = Command::new("zip")
            .args(["-q", "-j"])
            .arg(&zip)
            .arg(&bootstrap)
            .status();
        if !zipped.is_ok_and(|status| status.success()) {
            self.notes.push(format!(
                "{name}: no zip size: `zip` failed or is missing (apt-get install zip)"
            ));
            return Ok(None);
        }
        println!(
            "   {name:>14}: no arm64 Lambda zip (make build-lambda builds it): this build's binary, stripped and zipped"
        );
        Ok(Some((
            std::fs::metadata(&zip)?.len(),
            "x86_64 approximation",
        )))
    }
}

/// What each crate costs: read from the same code with its symbols (`make
/// profile` builds it; the release binaries are stripped), only when that
/// build is as new as the binary measured here.
fn print_crates(name: &str, binary: &Path) {
    let with_symbols = PathBuf::from(format!("target/profiling/{name}"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let current = matches!(
        (modified(&with_symbols), modified(binary)),
        (Some(profiled), Some(measured)) if profiled >= measured
    );
    let crates = current
        .then(|| {
            Command::new("scripts/crate-sizes.py")
                .arg(&with_symbols)
                .arg("10")
                .output()
                .ok()
        })
        .flatten()
        .filter(|out| out.status.success());
    match crates {
        Some(out) => println!(
            "   {name:>14}: {} ({}, {})",
            String::from_utf8_lossy(&out.stdout)
                .trim_end()
                .replace('\n', "\n                   "),
            std::env::consts::ARCH,
            with_symbols.display()
        ),
        None => println!(
            "   {name:>14}: code by crate: run make profile after this build (it keeps the symbols)"
        ),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}
