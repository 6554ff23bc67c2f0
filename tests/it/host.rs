//! What the tests need of the machine itself: whether they run as root, and installing a
//! missing Debian package. Self-contained (std only), so the cluster bench uses it too
//! (`benches/cluster.rs` includes it with the PostgreSQL harness, [`crate::pg`]).

/// Whether this test process runs as root (as on CI and the project's machines), where a
/// missing Debian package may be installed by the test that needs it.
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `apt-get install -y PACKAGE`, with `apt-get update` first when the package lists do not
/// know it yet; the output goes into the error when it fails. For a tool a test needs that the
/// machine lacks (PostgreSQL, curl), so `cargo test` alone needs nothing installed; a failure
/// fails the test, it never skips.
pub fn apt_install(package: &str) -> Result<(), String> {
    let apt = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|e| format!("cannot run apt-get {args:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "apt-get {args:?} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    apt(&["install", "-y", "-q", package])
        .or_else(|_| apt(&["update", "-q"]).and_then(|()| apt(&["install", "-y", "-q", package])))
}
