//! What must never leak: secrets and record contents stay out of outputs,
//! logs and metrics; the admin listener binds where it is told; TLS and
//! SASL configurations pass `check-config`.

use super::super::delivery_support::*;
use super::super::kafka_support::*;
use std::time::{Duration, Instant};

#[test]
fn secrets_and_record_contents_never_reach_output_logs_or_metrics() {
    const SECRET: &str = "s3cret-Pa55word-do-not-print";
    let scenario = Scenario::new(1);
    let broker = &scenario.broker;
    let path = scenario.dir.path().join("secrets.toml");
    let anomalyd = |command: &str, with_secret: bool| {
        let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"));
        if command == "run" {
            process.args(["run", "--config"]);
        } else {
            process.arg(command);
        }
        process.arg(&path);
        if with_secret {
            process.env("ANOMALYD_TEST_SECRET", SECRET);
        } else {
            process.env_remove("ANOMALYD_TEST_SECRET");
        }
        let output = process.output().unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), shown)
    };
    let password = "[kafka.properties]\n\"sasl.password\" = \"${ANOMALYD_TEST_SECRET}\"\n";
    std::fs::write(
        &path,
        daemon_config(&broker.brokers, "secrets", free_port(), password),
    )
    .unwrap();
    let (code, shown) = anomalyd("check-config", true);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("sasl.password = ********"), "{shown}");
    assert!(
        !shown.contains(SECRET),
        "check-config printed a secret:\n{shown}"
    );
    // Without the variable, the error names the key and the variable, not a value.
    let (code, shown) = anomalyd("check-config", false);
    assert_eq!(code, Some(64), "{shown}");
    assert!(
        shown.contains("sasl.password") && shown.contains("ANOMALYD_TEST_SECRET"),
        "{shown}"
    );

    // librdkafka refuses this OAuth property in this build (no libcurl), and
    // its error repeats the value: check-config and run must not.
    let secret_file = scenario.dir.path().join("token");
    std::fs::write(&secret_file, format!("{SECRET}-file\n")).unwrap();
    let oauth = format!(
        "[kafka.properties]\n\"sasl.oauthbearer.client.secret\" = \"${{file:{}}}\"\n",
        secret_file.display()
    );
    std::fs::write(
        &path,
        daemon_config(&broker.brokers, "secrets", free_port(), &oauth),
    )
    .unwrap();
    for command in ["check-config", "run"] {
        let (code, shown) = anomalyd(command, true);
        assert_ne!(code, Some(0), "{command}: {shown}");
        assert!(
            shown.contains("sasl.oauthbearer.client.secret"),
            "{command}: {shown}"
        );
        assert!(
            !shown.contains(SECRET),
            "{command} printed a secret:\n{shown}"
        );
        if command == "check-config" {
            assert_eq!(code, Some(64), "{shown}");
        }
    }

    // The daemon's own log at debug level, with a property librdkafka takes.
    let port = free_port();
    std::fs::write(
        &path,
        daemon_config(&broker.brokers, "secrets", port, password),
    )
    .unwrap();
    let log = scenario.dir.path().join("secrets.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
        .args(["run", "--config"])
        .arg(&path)
        .env("ANOMALYD_TEST_SECRET", SECRET)
        .env("ANOMALYD_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(admin, "/readyz"), Some((200, _))) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A record whose entity and values must not reach /metrics.
    let producer = producer(&broker.brokers);
    let record = r#"{"entity": "private-entity-7731", "ts": 1767225600000, "values": {"temperature": 1234.5678, "pressure": 1, "flow": 1, "vibration": 1, "power": 1}}"#;
    send(&producer, "input", 0, "private-key-7731", record.as_bytes());
    flush(&producer);
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (_, body) = http_get(admin, "/metrics").unwrap();
        if metric_value(&body, "anomalyd_records_decoded_total") == Some(1.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the record was not decoded:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for private in [
        SECRET,
        "private-entity-7731",
        "private-key-7731",
        "1234.5678",
    ] {
        assert!(!metrics.contains(private), "/metrics shows {private}");
    }
    // The admin listener is bound to the configured address only (loopback
    // here, not every interface), and nothing it serves changes state.
    assert!(
        listening_sockets(port).iter().all(|a| a == "0100007F"),
        "bound to {:?}",
        listening_sockets(port)
    );
    for (request, status) in [
        ("POST /metrics", 405),
        ("PUT /readyz", 405),
        ("DELETE /healthz", 405),
        ("POST /reload", 404),
        ("GET /debug", 404),
    ] {
        assert_eq!(http_status(admin, request), Some(status), "{request}");
    }
    #[allow(unsafe_code)] // kill(2) has no memory preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM)
    };
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(
        text.contains("sasl.password"),
        "the log should show the key (masked):\n{text}"
    );
    assert!(!text.contains(SECRET), "the log holds a secret:\n{text}");
}

/// The local IPv4 addresses (as /proc/net/tcp writes them) listening on `port`.
fn listening_sockets(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let wanted = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, local_port) = fields.get(1)?.split_once(':')?;
            // State 0A is LISTEN.
            (local_port == wanted && fields.get(3) == Some(&"0A")).then(|| address.to_string())
        })
        .collect()
}

/// The status of a request line such as `POST /metrics`, sent with an empty body.
fn http_status(address: std::net::SocketAddr, request: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{request} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn tls_and_sasl_configs_pass_check_config() {
    // The shipped example, with its password file and brokers supplied.
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("kafka-password");
    std::fs::write(&password, "scram-secret-4412\n").unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/kafka-tls-sasl.toml"
    ))
    .unwrap()
    .replace(
        "/run/secrets/kafka-password",
        &password.display().to_string(),
    );
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .arg("check-config")
            .arg(&path)
            .env("KAFKA_BROKERS", "kafka-1:9093,kafka-2:9093")
            .output()
            .unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), shown)
    };
    let (code, shown) = check("tls-sasl.toml", &example);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("SASL_SSL"), "{shown}");
    assert!(!shown.contains("scram-secret-4412"), "{shown}");
    // Mutual TLS and the other SASL mechanisms are accepted too.
    for (mechanism, protocol) in [
        ("PLAIN", "SASL_SSL"),
        ("SCRAM-SHA-256", "SASL_SSL"),
        ("SCRAM-SHA-512", "SASL_PLAINTEXT"),
    ] {
        let text = example
            .replace("SCRAM-SHA-512", mechanism)
            .replace("\"SASL_SSL\"", &format!("\"{protocol}\""));
        let (code, shown) = check("variant.toml", &text);
        assert_eq!(code, Some(0), "{mechanism} over {protocol}: {shown}");
    }
    let mutual = daemon_config(
        "kafka-1:9093",
        "g",
        9464,
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.endpoint.identification.algorithm\" = \"https\"\n",
    );
    let (code, shown) = check("mtls.toml", &mutual);
    assert_eq!(code, Some(0), "{shown}");
    // A misspelt protocol is named.
    let (code, shown) = check("bad.toml", &example.replace("\"SASL_SSL\"", "\"SASL_TLS\""));
    assert_eq!(code, Some(64), "{shown}");
    assert!(shown.contains("security.protocol"), "{shown}");
}
