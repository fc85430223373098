//! Starting anvil: the builder's options on the real binary, and what `spawn` reports when the
//! binary is missing, exits, stays silent, or says it listens where nothing answers. One test
//! (in its own binary): the stand-in scripts it writes are executed while no other test forks.

#![cfg(unix)]

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nitro_chain::{anvil::locate_anvil, Anvil, AnvilError};

/// A stand-in for anvil: a shell script with `body`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn startup_output(result: Result<Anvil, AnvilError>, after: Duration) -> String {
    match result {
        Err(AnvilError::Startup { after: waited, output }) => {
            assert_eq!(waited, after);
            output
        }
        other => panic!("expected a startup failure, got {other:?}"),
    }
}

#[test]
fn spawn_reports_each_way_anvil_can_fail_to_start_and_honours_its_options() {
    let dir = std::env::temp_dir().join(format!("nitro-anvil-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // No such binary.
    let missing = dir.join("no-anvil-here");
    match Anvil::builder().binary(&missing).spawn() {
        Err(e @ AnvilError::Spawn { .. }) => {
            let text = e.to_string();
            assert!(text.starts_with(&format!("cannot start {}: ", missing.display())), "{text}");
        }
        other => panic!("expected a spawn failure, got {other:?}"),
    }

    // It prints something else and exits: what it printed, on both streams, and its status.
    let patience = Duration::from_secs(60);
    let exits = script(&dir, "exits", "echo 'not anvil'\necho 'trouble' >&2\nexit 3");
    let output = startup_output(Anvil::builder().binary(&exits).startup_timeout(patience).spawn(), patience);
    assert!(output.contains("not anvil"), "{output}");
    assert!(output.contains("stderr: trouble"), "{output}");
    assert!(output.contains("(anvil exited"), "{output}");
    assert!(AnvilError::Startup { after: patience, output: "x".into() }.to_string().starts_with("anvil did not start"));

    // It stays silent: given up at the timeout (and killed).
    let short = Duration::from_millis(300);
    let silent = script(&dir, "silent", "exec sleep 600");
    let started = Instant::now();
    let output = startup_output(Anvil::builder().binary(&silent).startup_timeout(short).spawn(), short);
    assert!(output.contains("no \"Listening on\" line before the timeout"), "{output}");
    assert!(started.elapsed() < patience, "gave up long after the timeout");

    // It claims a port where nothing answers JSON-RPC.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let liar = script(&dir, "liar", &format!("echo 'Listening on 127.0.0.1:{port}'\nexec sleep 600"));
    let output = startup_output(Anvil::builder().binary(&liar).startup_timeout(short).spawn(), short);
    assert!(output.starts_with(&format!("anvil on port {port} did not answer eth_chainId: ")), "{output}");

    std::fs::remove_dir_all(&dir).unwrap();

    // The real one, on the port we choose, with an extra argument.
    let binary = locate_anvil().unwrap_or_else(|e| panic!("{e}"));
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let anvil = Anvil::builder()
        .binary(&binary)
        .port(port)
        .arg("--chain-id")
        .arg("31337")
        .startup_timeout(patience)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(anvil.port(), port);
    assert_eq!(anvil.endpoint(), format!("http://127.0.0.1:{port}"));
    assert_eq!(anvil.binary(), binary.as_path());
    assert!(anvil.pid() > 0);
}

#[test]
fn artifacts_that_cannot_be_deployed_are_refused_naming_the_file_and_the_fault() {
    use nitro_chain::{ArtifactError, Artifacts};
    let dir = std::env::temp_dir().join(format!("nitro-artifacts-{}", std::process::id()));
    let artifacts = Artifacts::at(&dir);
    assert_eq!(artifacts.dir(), dir.as_path());
    let write = |name: &str, json: serde_json::Value| {
        let folder = dir.join("contracts").join(format!("{name}.sol"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{name}.json")), json.to_string()).unwrap();
    };
    let malformed = |name: &str| match artifacts.load(name) {
        Err(e @ ArtifactError::Malformed { .. }) => {
            let text = e.to_string();
            assert!(text.starts_with("malformed artifact ") && text.contains(&format!("{name}.json")), "{text}");
            text
        }
        other => panic!("{name}: expected a malformed artifact, got {other:?}"),
    };

    match artifacts.load("Absent") {
        Err(e @ ArtifactError::Read { .. }) => assert!(e.to_string().contains("Absent.json"), "{e}"),
        other => panic!("expected a read failure, got {other:?}"),
    }
    write("NotJson", serde_json::json!("just a string"));
    malformed("NotJson");
    let artifact =
        |name: &str, bytecode: &str| serde_json::json!({ "contractName": name, "abi": [], "bytecode": bytecode });
    write("Renamed", artifact("SomethingElse", "0x6000"));
    assert!(malformed("Renamed").ends_with("contract name is SomethingElse"));
    let mut linked = artifact("Linked", "0x6000");
    linked["linkReferences"] = serde_json::json!({ "contracts/Lib.sol": {} });
    write("Linked", linked);
    assert!(malformed("Linked").ends_with("needs library linking, which this loader does not do"));
    write("BadHex", artifact("BadHex", "0xzz"));
    assert!(malformed("BadHex").contains("bytecode: "));
    write("Interface", artifact("Interface", "0x"));
    assert!(malformed("Interface").ends_with("empty bytecode (an interface?)"));
    write("Fine", artifact("Fine", "0x6000"));
    let fine = artifacts.load("Fine").unwrap();
    assert_eq!((fine.name.as_str(), fine.bytecode.len()), ("Fine", 2));
    std::fs::remove_dir_all(&dir).unwrap();
}
