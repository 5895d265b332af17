//! The Python peer pipeline (`peer.py`: confluent-kafka, orjson, numpy,
//! onnxruntime; what a user would write instead) on the same broker, topic,
//! records and model as the daemon, for the ratio of the two.

use super::kafka_support::Broker;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where the peer is and how it runs.
pub struct Peer {
    /// A Python with confluent-kafka, onnxruntime, orjson and numpy.
    pub python: PathBuf,
    /// `peer.py`.
    pub script: PathBuf,
    /// onnxruntime's intra-op threads (the daemon's model threads, for a
    /// like-for-like run).
    pub threads: usize,
}

/// What the peer sustained.
pub struct PeerRun {
    /// From its first record to its last, as it reports.
    pub samples_per_s: f64,
    /// Windows it scored per second.
    pub windows_per_s: f64,
    /// CPU time (user and system) of the whole Python process per sample,
    /// start-up included, in µs.
    pub cpu_us_per_sample: f64,
}

impl Peer {
    /// Checks that the interpreter and the script are there and that the
    /// interpreter has the peer's packages.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.script.is_file(),
            "no peer script at {}",
            self.script.display()
        );
        let imports = Command::new(&self.python)
            .args(["-c", "import confluent_kafka, onnxruntime, orjson, numpy"])
            .status()?;
        anyhow::ensure!(
            imports.success(),
            "{} lacks the peer's packages (confluent-kafka, onnxruntime, orjson, numpy); benches/peer.sh installs them",
            self.python.display()
        );
        Ok(())
    }

    /// Runs the peer on `broker`'s filled input topic from the start until
    /// it has read `samples` records.
    pub fn run(
        &self,
        broker: &Broker,
        model: &Path,
        channels: &[String],
        window_len: usize,
        stride: usize,
        samples: usize,
    ) -> anyhow::Result<PeerRun> {
        let started = Instant::now();
        // Run under `time`'s equivalent: the child's rusage once it has exited.
        let output = Command::new(&self.python)
            .arg("-c")
            .arg(RUN_WITH_RUSAGE)
            .arg(&self.script)
            .arg(&broker.brokers)
            .arg("input")
            .arg(format!("peer-{}", std::process::id()))
            .arg(model)
            .arg(channels.join(","))
            .arg(window_len.to_string())
            .arg(stride.to_string())
            .arg(samples.to_string())
            .arg(self.threads.to_string())
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "the peer failed after {:.0} s: {}\n{stdout}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stderr)
        );
        let field = |name: &str| -> anyhow::Result<f64> {
            stdout
                .split_whitespace()
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .ok_or_else(|| anyhow::anyhow!("no {name} in the peer's output: {stdout}"))?
                .parse::<f64>()
                .map_err(Into::into)
        };
        let seen = field("samples")?;
        anyhow::ensure!(
            seen as usize >= samples,
            "the peer read {seen} of {samples} samples"
        );
        Ok(PeerRun {
            samples_per_s: field("samples_per_s")?,
            windows_per_s: field("windows_per_s")?,
            cpu_us_per_sample: field("cpu_seconds")? / seen * 1e6,
        })
    }
}

/// Runs the script named by `sys.argv[1]` with the rest as its arguments,
/// then prints `cpu_seconds=` of this process (user and system).
const RUN_WITH_RUSAGE: &str = "
import resource, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
usage = resource.getrusage(resource.RUSAGE_SELF)
print(f'cpu_seconds={usage.ru_utime + usage.ru_stime:.3f}')
";
