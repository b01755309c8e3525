#!/usr/bin/env python3
"""What each crate costs in a function binary: the code of its symbols.

    scripts/crate-sizes.py BINARY [TOP]

BINARY must keep its symbol table (the `profiling` profile's builds, or
`make build-lambda`'s unstripped arm64 binaries). Like `cargo bloat
--crates`: each function's code goes to the crate its demangled path starts
with; a generic instantiated for another crate's type (`drop_in_place<T>`,
`<T as Trait>::f`) goes to the crate of `T`; C code by its library's
prefix. Prints the TOP (12) crates by size and the share of all code.
"""

import re
import shutil
import subprocess
import sys
from collections import Counter

C_PREFIXES = (("aws_lc_", "aws-lc (C)"), ("sqlite3", "sqlite (C)"))
STD = {"std", "core", "alloc", "panic_unwind", "std_detect", "hashbrown", "rustc_demangle", "gimli", "addr2line", "miniz_oxide"}


def nm_for(binary: str) -> str:
    arch = subprocess.run(["file", "-b", binary], capture_output=True, text=True).stdout
    if "aarch64" in arch and shutil.which("aarch64-linux-gnu-nm"):
        return "aarch64-linux-gnu-nm"
    return "nm"


def crate_of(name: str) -> str:
    for prefix, label in C_PREFIXES:
        if name.startswith(prefix):
            return label
    # `<T as Trait>::f`, `drop_in_place<T>`: the crate of T.
    inner = re.match(r"^(?:core::ptr::drop_in_place<|<)&?(?:mut )?(?:dyn )?([A-Za-z_][A-Za-z0-9_]*)::", name)
    # `<&T as core::fmt::Debug>::fmt`: a generic parameter; the trait's crate.
    trait = re.match(r"^<[^<>]* as ([A-Za-z_][A-Za-z0-9_]*)::", name)
    if inner:
        path = inner.group(1)
    elif trait:
        path = trait.group(1)
    elif "::" in name:
        path = name.split("::", 1)[0].lstrip("<")
    else:
        return "C, other symbols"
    return "std (core, alloc, ...)" if path in STD else path.replace("_", "-")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 12
    out = subprocess.run(
        [nm_for(binary), "--print-size", "--size-sort", "--demangle", "--defined-only", binary],
        capture_output=True, text=True, check=True,
    ).stdout
    sizes: Counter = Counter()
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in "tTwW":
            sizes[crate_of(parts[3])] += int(parts[1], 16)
    if not sizes:
        sys.exit(f"{binary}: no symbols (a stripped binary?)")
    total = sum(sizes.values())
    print(f"code {total / 1024:.0f} KiB in {len(sizes)} crates; the largest:")
    for crate, size in sizes.most_common(top):
        print(f"  {crate:<28} {size / 1024:8.0f} KiB  {100 * size / total:5.1f} %")


if __name__ == "__main__":
    main()
