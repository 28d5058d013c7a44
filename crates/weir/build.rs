//! Lays out the `weir` binary's code so that the functions it runs while starting and serving
//! sit together (`link.order`, written by `bench/link-order.sh`). The kernel maps code in 64 KiB
//! chunks around each page touched; with that code scattered over 11 MB, an idle weir had 7.6 MiB
//! of its binary resident, with the ordering 3-4 MiB (BENCHMARKS.md, "Idle memory").
//!
//! Needs lld (Rust's default linker for x86_64 Linux since 1.90). Names the file no longer
//! matches (after dependency or toolchain updates) are skipped: a stale order file costs memory,
//! never correctness; regenerate it with `bench/link-order.sh`. `WEIR_NO_LINK_ORDER=1` turns it off
//! (e.g. when linking with GNU ld).

fn main() {
    println!("cargo::rerun-if-changed=link.order");
    println!("cargo::rerun-if-env-changed=WEIR_NO_LINK_ORDER");
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || std::env::var_os("WEIR_NO_LINK_ORDER").is_some()
    {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    println!("cargo::rustc-link-arg-bin=weir=-Wl,--symbol-ordering-file={dir}/link.order");
    println!("cargo::rustc-link-arg-bin=weir=-Wl,--no-warn-symbol-ordering");
}
