//! README command 1: `payrecon demo` settles every scenario payment against the sandbox
//! (through the binary, the daemon path, the real gateways' protocols) and says so.

use std::process::Command;

#[test]
fn the_demo_settles_every_payment_as_its_scenario_defines() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_payrecon"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("demo passed"), "{stdout}");
    for state in [
        "succeeded",
        "failed",
        "reversed",
        "refunded",
        "needs_review",
    ] {
        assert!(
            stdout.contains(state),
            "no {state} in the summary:\n{stdout}"
        );
    }
    assert!(stdout.contains("unknown to the ledger"), "{stdout}");
    // Amounts as money: HK$11.00, not 1100 minor units.
    assert!(
        stdout.contains("HKAMT00001: gateway amount 11.00 HKD differs from the ledger's 10.00 HKD"),
        "{stdout}"
    );
    // The ledger it leaves behind is readable with the ordinary commands.
    let stats = Command::new(env!("CARGO_BIN_EXE_payrecon"))
        .arg("--config")
        .arg(dir.path().join("payrecon.toml"))
        .args(["ledger", "stats"])
        .output()
        .unwrap();
    assert!(stats.status.success());
    assert!(String::from_utf8_lossy(&stats.stdout).contains("oldest open payment: none"));
}
