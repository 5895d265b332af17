//! Helpers for the daemon tests: an in-process Kafka-protocol broker
//! (librdkafka's mock cluster), the real `anomalyd` binary as a child
//! process, and plain Kafka clients to produce input and read outputs.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A broker started by the test.
pub struct Broker {
    /// The mock cluster (kept alive as long as the test needs it).
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    /// Its bootstrap address.
    pub brokers: String,
}

/// Starts a one-broker cluster with `topics` (name, partitions).
pub fn start_broker(topics: &[(&str, i32)]) -> Broker {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in topics {
        cluster.create_topic(topic, *partitions, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    Broker { cluster, brokers }
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Put in a test's `extra` to leave `state.topic` unset (the group's own,
/// `<group>-state`, which the test must create: the mock broker cannot).
pub const GROUP_STATE_TOPIC: &str = "# state.topic: the group's own\n";

/// A daemon config for `brokers`; `extra` is appended (more tables). Entity
/// state is checkpointed every second unless `extra` has its own `[state]`,
/// to the state topic `anomalyd-state` that [`super::delivery_support::all_topics`]
/// creates, unless `extra` names another or has [`GROUP_STATE_TOPIC`].
pub fn daemon_config(brokers: &str, group: &str, admin_port: u16, extra: &str) -> String {
    let topic = if extra.contains(GROUP_STATE_TOPIC) || extra.contains("\ntopic = ") {
        ""
    } else {
        "topic = \"anomalyd-state\"\n"
    };
    let (state, extra) = if extra.contains("[state]") {
        (
            String::new(),
            extra.replacen("[state]\n", &format!("[state]\n{topic}"), 1),
        )
    } else {
        (
            format!("[state]\n{topic}checkpoint_interval_ms = 1000"),
            extra.to_string(),
        )
    };
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["input"]
alerts_topic = "alerts"
scores_topic = "scores"
dead_letter_topic = "dead-letters"
commit_interval_ms = 200

[admin]
listen = "127.0.0.1:{admin_port}"

{state}

{extra}
"#
    )
}

/// The `anomalyd` binary running as a child process.
pub struct DaemonProcess {
    /// The process.
    pub child: Child,
    /// Its admin address.
    pub admin: SocketAddr,
    /// Its log (stderr).
    pub log: PathBuf,
}

impl DaemonProcess {
    /// Starts `anomalyd run --config` with `config` written into `dir`;
    /// `Err(log)` if the daemon exited before it was up (for example because
    /// its admin port was taken meanwhile).
    fn try_start(
        binary: &Path,
        dir: &Path,
        name: &str,
        config: &str,
        admin_port: u16,
    ) -> Result<Self, String> {
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&config_path)
            // ANOMALYD_TEST_LOG gives the daemons of a test run another
            // log filter (e.g. `info,anomalyd::daemon::source=debug`).
            .env(
                "ANOMALYD_LOG",
                std::env::var("ANOMALYD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the anomalyd binary starts");
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let mut process = Self { child, admin, log };
        // Up means: this process logged that it bound the admin port, and the
        // port answers. The log line matters: if another test's daemon got
        // the same port, /healthz alone would answer for that one.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = process.child.try_wait().unwrap() {
                return Err(format!("{status}\n{}", process.log_text()));
            }
            if process.log_text().contains("anomalyd is running")
                && http_get(process.admin, "/healthz").is_some()
            {
                return Ok(process);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the daemon's admin listener did not come up; log:\n{}",
            process.log_text()
        );
    }

    /// Starts the binary on a free admin port with [`daemon_config`] for
    /// `brokers`, consumer group `group` and the `extra` tables. A port taken
    /// between choosing and binding it (tests run in parallel) is chosen again.
    pub fn launch(dir: &Path, brokers: &str, name: &str, group: &str, extra: &str) -> Self {
        let binary = Path::new(env!("CARGO_BIN_EXE_anomalyd"));
        Self::launch_binary(binary, dir, brokers, name, group, extra)
    }

    /// [`launch`](Self::launch) with another build of the daemon (a
    /// benchmark's baseline).
    pub fn launch_binary(
        binary: &Path,
        dir: &Path,
        brokers: &str,
        name: &str,
        group: &str,
        extra: &str,
    ) -> Self {
        let mut attempts = 0;
        loop {
            let port = free_port();
            let config = daemon_config(brokers, group, port, extra);
            match Self::try_start(binary, dir, name, &config, port) {
                Ok(process) => return process,
                Err(log) if log.contains("in use") && attempts < 4 => attempts += 1,
                Err(log) => panic!("the daemon exited before it was up; log:\n{log}"),
            }
        }
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = None;
        while Instant::now() < deadline {
            match http_get(self.admin, "/readyz") {
                Some((200, _)) => return,
                answer => last = answer,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the daemon did not become ready; /readyz last answered {last:?}; log:\n{}",
            self.log_text()
        );
    }

    /// The value of a metric sample (name with labels, as in the text format), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = http_get(self.admin, "/metrics")?;
        metric_value(&body, sample)
    }

    /// The sum of every sample of `name` (all label sets); 0 when absent.
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum_in(&self.metrics_text(), name)
    }

    /// One scrape of `/metrics` (empty when it cannot be read), for reading
    /// several metrics from the same moment with [`metric_sum_in`].
    pub fn metrics_text(&self) -> String {
        http_get(self.admin, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The process's peak resident set size so far, in bytes (Linux `VmHWM`).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Sends a signal.
    #[allow(unsafe_code)] // kill(2) has no memory preconditions.
    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits up to `limit` for the process to exit and checks it exited 0;
    /// the panic message holds its log.
    pub fn assert_clean_exit(&mut self, limit: Duration) {
        let status = self.wait_exit(limit);
        assert!(
            status.is_some_and(|s| s.success()),
            "exit status after {limit:?}: {status:?} (None: still running); log:\n{}",
            self.log_text()
        );
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample in Prometheus text format.
pub fn metric_value(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        line.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A minimal GET: `(status, body)`, or `None` when nothing answers. HTTP/1.0,
/// so that no server answers in chunks.
pub fn http_get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// A producer for test input.
pub fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "2")
        .create()
        .unwrap()
}

/// A producer that writes every record as a record batch of its own, so
/// that any offset a consumer resumes from is the start of a batch. tansu
/// 0.6's fetch (`tansu-storage` 0.6.0, `dynostore.rs`: `offsets.split_off(&offset)`)
/// returns only the batches that *start* at or after the requested offset:
/// a consumer group resuming from a committed offset inside a batch never
/// sees the rest of that batch. Kafka returns the batch holding the offset.
pub fn one_record_per_batch_producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .unwrap()
}

/// Sends one record to an explicit partition (waits while the queue is full).
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
) {
    let mut record = BaseRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Flushes a producer.
pub fn flush(producer: &ThreadedProducer<DefaultProducerContext>) {
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<String>,
    /// Value.
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, String)>,
}

/// A consumer that reads a topic from the beginning, without a group commit.
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
    /// Everything read so far.
    pub records: Vec<ReadRecord>,
}

impl TopicReader {
    /// Reads `topic` (with `partitions`) from offset 0.
    pub fn new(brokers: &str, topic: &str, partitions: i32) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("reader-{topic}-{}", free_port()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        Self {
            consumer,
            topic: topic.to_string(),
            partitions,
            records: Vec::new(),
        }
    }

    /// Reads until the reader is at the end of every partition (as of now).
    pub fn catch_up(&mut self) {
        let ends: Vec<i64> = (0..self.partitions)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(5))
                    .unwrap()
                    .1
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done = (0..self.partitions).all(|p| {
                let next = self
                    .records
                    .iter()
                    .filter(|r| r.partition == p)
                    .map(|r| r.offset + 1)
                    .max()
                    .unwrap_or(0);
                next >= ends[p as usize]
            });
            // Past the reported end, take what has arrived anyway (tansu
            // 0.6 reports the start of a partition's last batch as its end).
            let timeout = if done {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            assert!(
                Instant::now() < deadline,
                "could not read {} to its end",
                self.topic
            );
            let polled = self.consumer.poll(timeout);
            if done && polled.is_none() {
                return;
            }
            if let Some(message) = polled {
                let message = message.unwrap();
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.records.push(ReadRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
    }

    /// The records read so far, parsed as JSON.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.records
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).expect("JSON output"))
            .collect()
    }
}

/// The committed offsets of `group` on `topic`'s partitions (`-1` where none).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    CommittedOffsets::new(brokers, group).read(topic, partitions)
}

/// Reads a group's committed offsets again and again through one client
/// (a new client per read spends most of its time finding the coordinator).
pub struct CommittedOffsets {
    consumer: BaseConsumer,
}

impl CommittedOffsets {
    /// A client of `group` that never joins it nor commits.
    pub fn new(brokers: &str, group: &str) -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        CommittedOffsets { consumer }
    }

    /// The committed offset of each partition of `topic`; -1 where none is.
    pub fn read(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let list = self
            .consumer
            .committed_offsets(list, Duration::from_secs(5))
            .unwrap();
        (0..partitions)
            .map(
                |p| match list.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect()
    }
}

/// The sum of every sample of `name` (all label sets) in a `/metrics`
/// scrape; 0 when absent.
pub fn metric_sum_in(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
