//! The Python virtualenv with the dialects' real clients (tests/clients/requirements.txt),
//! created on first use under target/py-venv by the test suite itself, so a fresh machine
//! needs nothing but `cargo test`. A missing python3 or a failed install fails the test
//! with the command's output; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, creating the venv and installing the clients once per test run (and
/// only again when requirements.txt changes).
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(create_venv)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn create_venv() -> Result<PathBuf, String> {
    let venv = create_pinned_venv("target/py-venv", "tests/clients/requirements.txt")?;
    Ok(venv.join("bin/python"))
}

/// The venv at `dir` (relative to the repository) with the pinned `requirements` installed,
/// created (or recreated, when the requirements change) on first use. Returns the venv's
/// directory. Each set of tools has its own venv so that none pins another's dependencies.
pub fn create_pinned_venv(dir: &str, requirements: &str) -> Result<PathBuf, String> {
    let venv = root().join(dir);
    let python = venv.join("bin/python");
    let requirements = root().join(requirements);
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    let stamp = venv.join("installed-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(venv);
    }
    let system_python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
        .ok_or("these tests need python3 (with venv) on PATH; install it (apt-get install python3-venv)")?;
    run(Command::new(system_python)
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
    Ok(venv)
}

/// Runs `tests/clients/<script>` with the venv's python and `args`; returns its stdout,
/// failing the test with stdout and stderr if it exits non-zero.
pub fn run_script(script: &str, args: &[&str]) -> String {
    run_script_env(script, args, &[])
}

/// [`run_script`] with `env` set for the script.
pub fn run_script_env(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path: &Path = &root().join("tests/clients").join(script);
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_pinned_real_clients_install_and_import() {
    let out = run_script("versions.py", &[]);
    let versions: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    let requirements =
        std::fs::read_to_string(root().join("tests/clients/requirements.txt")).unwrap();
    for line in requirements
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("=="))
    {
        let (name, pinned) = line.split_once("==").unwrap();
        assert_eq!(versions[name.trim()], pinned.trim(), "{name}");
    }
}
