//! The `spendgate` binary. Its commands (`migrate`, `serve`, `reserve`, …)
//! arrive with the binary's issue; for now it reports its version.

fn main() -> anyhow::Result<()> {
    println!("spendgate {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
