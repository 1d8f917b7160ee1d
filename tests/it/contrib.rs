//! What `contrib/` ships: the systemd unit passes `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (.ci/run installs it)");
        return;
    }
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/anytls-server.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/anytls-server"),
        "{text}"
    );
    // verify checks that ExecStart's program exists: point it at the one built.
    let dir = std::env::temp_dir().join(format!("anytls-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("anytls-server.service");
    std::fs::write(
        &copy,
        text.replace(
            "/usr/local/bin/anytls-server",
            env!("CARGO_BIN_EXE_anytls-server"),
        ),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "systemd-analyze verify failed: {said}"
    );
    // Unknown or misspelled directives are only warnings: none may appear.
    assert!(
        !said.contains("anytls-server.service:"),
        "systemd-analyze verify warned: {said}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
