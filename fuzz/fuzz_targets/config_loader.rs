//! Fuzz target: the daemon's TOML config loader never panics; a config it
//! accepts can be described (the masked dump `check-config` prints).
#![no_main]

use anomalyd::daemon::config::DaemonConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `${VAR}` resolves to a fixed value; `${file:…}` reads the file as it would in `run`.
    let env = |name: &str| (name.len() < 8).then(|| "secret-value".to_string());
    if let Ok(config) = DaemonConfig::from_toml(text, "fuzz", &env) {
        let _ = config.describe();
    }
});
