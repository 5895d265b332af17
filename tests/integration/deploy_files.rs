//! The files in `deploy/` against the daemon: every metric the dashboard,
//! the alerting rules and docs/daemon.md name is one anomalyd exports; the
//! PrometheusRule carries the rules file; the Kubernetes config passes the
//! daemon's loader; grace periods nest; and a real Prometheus scrapes
//! `anomalyd demo` and loads the rules. (The tools' own checks, promtool,
//! kubernetes-validate, hadolint and systemd-analyze, run in
//! `.ci/deploy-checks`.)

use super::kafka_support::{free_port, http_get as get};
use anomalyd::daemon::admin::metrics::Metrics;
use anomalyd::daemon::config::DaemonConfig;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Metric names exported by the daemon (histograms also as their series).
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new();
    metrics.set_model_version("v");
    metrics.consumer_lag.with_label_values(&["t", "0"]).set(0);
    let mut names = BTreeSet::new();
    for line in metrics.encode().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// Every `anomalyd_…` name in `text`.
fn named_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("anomalyd_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if before_ok {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn every_metric_the_dashboard_rules_and_readme_name_is_exported() {
    let exported = exported();
    let files = [
        "deploy/grafana/anomalyd-dashboard.json",
        "deploy/prometheus/anomalyd-rules.yml",
        "deploy/k8s/prometheusrule.yaml",
    ];
    for file in files {
        let named = named_in(&read(file));
        assert!(!named.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics anomalyd does not export: {unknown:?}"
        );
    }
    // The dashboard is valid JSON, every panel queries something.
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/anomalyd-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(
            targets
                .iter()
                .all(|t| t["expr"].as_str().is_some_and(|e| e.contains("anomalyd_"))),
            "panel {} has a target without an anomalyd metric",
            panel["title"]
        );
    }
    // The daemon's metrics reference lists exactly what is exported (base names).
    let readme = read("docs/daemon.md");
    let table = &readme[readme.find("| `anomalyd_records_consumed_total`").unwrap()..];
    let table = &table[..table.find("\n\n").unwrap()];
    let documented = named_in(table);
    let base: BTreeSet<String> = exported
        .iter()
        .filter(|n| {
            !["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| n.ends_with(s) && exported.contains(&n[..n.len() - s.len()]))
        })
        .cloned()
        .collect();
    assert_eq!(
        documented, base,
        "docs/daemon.md metrics table vs exported metrics"
    );
}

#[test]
fn the_prometheus_rule_carries_the_rules_file() {
    let rules = read("deploy/prometheus/anomalyd-rules.yml");
    let groups = &rules[rules.find("groups:").unwrap()..];
    let indented: String = groups
        .lines()
        .map(|l| {
            if l.trim().is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    let rule = read("deploy/k8s/prometheusrule.yaml");
    let spec = &rule[rule.find("spec:\n").unwrap() + "spec:\n".len()..];
    assert_eq!(
        spec, indented,
        "deploy/k8s/prometheusrule.yaml differs from the rules file"
    );
}

#[test]
fn the_kubernetes_config_loads_and_the_grace_periods_nest() {
    let configmap = read("deploy/k8s/configmap.yaml");
    let start = configmap.find("anomalyd.toml: |\n").unwrap() + "anomalyd.toml: |\n".len();
    let toml: String = configmap[start..]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let env = |name: &str| match name {
        "KAFKA_BROKERS" => Some("kafka-0:9093".to_string()),
        "KAFKA_USERNAME" | "KAFKA_PASSWORD" => Some("x".to_string()),
        _ => None,
    };
    let config = DaemonConfig::from_toml(&toml, "configmap.yaml", &env).unwrap();
    anomalyd::daemon::clients::check(&config).unwrap();
    // Probes and Prometheus reach the pod IP.
    assert!(config.admin.listen.ip().is_unspecified());
    let grace = config.shutdown.grace_period_s;
    let value_after = |text: &str, key: &str| -> u64 {
        let at = text.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len();
        text[at..]
            .trim_start_matches([':', '=', ' '])
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let pod = value_after(
        &read("deploy/k8s/deployment.yaml"),
        "terminationGracePeriodSeconds",
    );
    assert!(
        pod > grace,
        "terminationGracePeriodSeconds {pod} must exceed grace_period_s {grace}"
    );
    let default_grace = DaemonConfig::from_toml(
        "[kafka]\nbrokers = \"b:1\"\ninput_topics = [\"in\"]\n",
        "t",
        &|_| None,
    )
    .unwrap()
    .shutdown
    .grace_period_s;
    let unit = read("deploy/systemd/anomalyd.service");
    let stop = value_after(&unit, "TimeoutStopSec");
    assert!(
        stop > default_grace,
        "TimeoutStopSec {stop} must exceed the default grace period {default_grace}"
    );
    // The kustomization lists files that exist.
    let kustomization = read("deploy/k8s/kustomization.yaml");
    let resources = &kustomization[kustomization.find("resources:").unwrap()..];
    let listed: Vec<&str> = resources
        .lines()
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- "))
        .collect();
    assert!(listed.len() >= 7, "{listed:?}");
    for file in listed {
        assert!(
            repo("deploy/k8s").join(file).exists(),
            "kustomization lists missing {file}"
        );
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of an instant query's only sample, if there is one.
fn query(prometheus: SocketAddr, expr: &str) -> Option<f64> {
    let (status, body) = get(prometheus, &format!("/api/v1/query?query={expr}"))?;
    if status != 200 {
        return None;
    }
    let reply: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = reply["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn a_real_prometheus_scrapes_the_demo_and_loads_the_rules() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("ANOMALYD_REQUIRE_PROMTOOL").is_none(),
            "prometheus is required (ANOMALYD_REQUIRE_PROMTOOL is set) but not installed"
        );
        println!("SKIPPED: prometheus is not installed (Debian package `prometheus`; .ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let demo_log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    let _demo = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .args(["demo", "--rate", "4000", "--linger", "--admin"])
            .arg(admin.to_string())
            .stdout(Stdio::null())
            .stderr(demo_log)
            .spawn()
            .unwrap(),
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: anomalyd\n    static_configs:\n      - targets: ['{admin}']\n",
            repo("deploy/prometheus/anomalyd-rules.yml").display()
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (scored, consumed) = loop {
        let scored = query(web, "anomalyd_windows_scored_total").unwrap_or(0.0);
        let consumed = query(web, "anomalyd_records_consumed_total").unwrap_or(0.0);
        if scored > 0.0 && consumed > 0.0 {
            break (scored, consumed);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw scored windows; demo log:\n{}\nprometheus log:\n{}",
            log("demo.log"),
            log("prometheus.log")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Plausible values: the target is up and ready, fewer windows than
    // records (each entity's first 63 samples complete none), a model named.
    assert_eq!(query(web, "up"), Some(1.0));
    assert!(
        scored < consumed,
        "{scored} windows from {consumed} records"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(web, "anomalyd_ready") != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "never ready; demo log:\n{}",
            log("demo.log")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(query(web, "anomalyd_model_info"), Some(1.0));
    // Lag series exist for assigned partitions only (none once the demo has
    // read everything and been revoked); when there, never negative.
    let lag = query(web, "sum(anomalyd_consumer_lag)");
    assert!(lag.is_none_or(|lag| lag >= 0.0), "{lag:?}");
    // The alerting rules loaded and evaluate without error.
    let (status, body) = get(web, "/api/v1/rules").unwrap();
    assert_eq!(status, 200, "{body}");
    let rules: serde_json::Value = serde_json::from_str(&body).unwrap();
    let loaded: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 8, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(web, "/api/v1/rules").unwrap();
        let rules: serde_json::Value = serde_json::from_str(&body).unwrap();
        let health: Vec<String> = rules["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["health"].as_str().unwrap_or("").to_string())
            .collect();
        if health.iter().all(|h| h == "ok") {
            break;
        }
        assert!(Instant::now() < deadline, "rules not healthy: {health:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("prometheus scraped the demo: {scored} windows scored of {consumed} records, lag {lag:?}, 8 rules healthy");
}
