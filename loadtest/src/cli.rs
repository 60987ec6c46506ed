//! Command line: one flat set of flags shared by every scenario, so a parent can
//! re-exec itself as worker processes with the very same argv.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N connections, handshake rate, RSS per connection, optional hold.
    Connect,
    /// N subscribers, M sequential broadcasts, delivery latency.
    Fanout,
    /// N subscribers, K publishes in flight for T seconds.
    Throughput,
    /// Closed-loop application pings on N connections.
    Ping,
    /// Connect, subscribe, receive one broadcast, disconnect; in a loop.
    Churn,
    /// Long run: base population + churn + steady mixed broadcasts; server RSS and
    /// open fds sampled every second and checked for growth (needs --server-pid).
    Soak,
    /// N clients with known stream positions reconnect at once with `resume=1`
    /// after a server restart or a connection blip (`--after`).
    ResumeStorm,
}

/// What drops the clients of `resume-storm`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum After {
    /// Every client closes its TCP socket; the server keeps its history.
    Blip,
    /// `--restart-cmd` restarts the server (single node: every stream gets a new epoch).
    Restart,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Fanout => "fanout",
            Scenario::Throughput => "throughput",
            Scenario::Ping => "ping",
            Scenario::Churn => "churn",
            Scenario::Soak => "soak",
            Scenario::ResumeStorm => "resume-storm",
        }
    }
}

/// Load generator for wsgate and the peer servers that speak the bench protocol.
/// Loopback targets only.
#[derive(Parser, Debug, Clone)]
#[command(name = "wsgate-loadtest", version, about, long_about = None)]
pub struct Cli {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,

    /// Server base URL (http:// or ws://); must be localhost or in 127.0.0.0/8.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// WebSocket endpoints to spread the connections over, round-robin
    /// (comma list; default: --url). Publishing always goes to --url: with
    /// two cluster nodes, `--url A --ws-url A,B` measures cross-node fan-out.
    #[arg(long = "ws-url", value_delimiter = ',')]
    pub ws_urls: Vec<String>,

    /// Label for the results (wsgate, uws, node-ws, rust-tokio, seed-python, ...).
    #[arg(long, default_value = "wsgate", value_parser = parse_label)]
    pub target: String,

    /// HS256 secret used to mint one token per connection.
    #[arg(long, default_value = "bench-secret")]
    pub jwt_secret: String,

    /// Bearer key for POST /api/v1/events.
    #[arg(long, default_value = "bench-key")]
    pub api_key: String,

    /// Connections (connect/fanout/throughput/ping), concurrent loops (churn), or the
    /// long-lived base population (soak; default 500 there).
    #[arg(short = 'n', long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,

    /// Broadcasts per payload size (fanout).
    #[arg(short = 'm', long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub broadcasts: u64,

    /// Unreported warm-up broadcasts before the measured ones (fanout).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub warmup: u64,

    /// Payload sizes in bytes of the serialized `data` object, comma separated (fanout,
    /// throughput, churn use the first).
    #[arg(long, default_value = "100", value_parser = parse_payload, value_delimiter = ',')]
    pub payload: Vec<usize>,

    /// Publishes in flight (throughput).
    #[arg(short = 'k', long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub in_flight: u64,

    /// Measurement time (throughput, ping, churn).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Stop churn after this many cycles in total (whichever of this and --duration comes first).
    #[arg(long)]
    pub cycles: Option<u64>,

    /// Keep the connections open this long after connecting (connect), then report errors.
    #[arg(long, value_parser = parse_duration)]
    pub hold: Option<Duration>,

    /// Handshakes in flight, in total over all generator processes (a server pinned to one
    /// core with a 128-deep accept backlog drops SYNs past that: 1 s retransmits).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,

    /// Server PID, to read VmRSS from /proc/PID/status.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Client source addresses (bind before connect): `A-B` range and/or comma list, in 127/8.
    #[arg(long, default_value = "127.0.0.2-127.0.0.9", value_parser = parse_source_ips)]
    pub source_ips: SourceIps,

    /// Generator processes: re-exec this binary P times, splitting N, and merge results.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub procs: u64,

    /// Global wall-clock limit; the tool exits (status 3) when it is reached.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How long to wait for one broadcast to reach every subscriber (fanout), for a
    /// pong (ping), or for the broadcast of a cycle (churn).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub op_timeout: Duration,

    /// After the last publish, how long to wait for missing deliveries.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Time between publishes in churn (soak: default 50ms).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub publish_interval: Duration,

    /// Idle connections send an application `ping` this often (the seed closes silent clients
    /// at 60 s; soak: default 5s, so a --connection-timeout of 15s never fires).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub app_ping_interval: Duration,

    /// Soak: concurrent churn loops next to the base population (connect, subscribe to a
    /// random subset, maybe unsubscribe/resubscribe, receive, disconnect).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub churn: u64,

    /// Soak: allowed growth of the server's RSS, in percent of its baseline (median of the
    /// samples from 20% to 40% of the run) to the median of the last 20%.
    #[arg(long, default_value_t = 10.0, value_parser = parse_percent)]
    pub rss_growth_tolerance: f64,

    /// Soak: the RSS growth allowance is at least this many KiB.
    #[arg(long, default_value_t = 2048)]
    pub rss_growth_min_kib: u64,

    /// Soak: allowed growth of the server's open file descriptors, in percent of the baseline.
    #[arg(long, default_value_t = 2.0, value_parser = parse_percent)]
    pub fd_growth_tolerance: f64,

    /// Soak: the fd growth allowance is at least this many descriptors.
    #[arg(long, default_value_t = 20)]
    pub fd_growth_min: u64,

    /// Soak: also write the per-second samples (t, RSS, fds, loadavg, cycles, broadcasts) here as CSV.
    #[arg(long)]
    pub samples: Option<PathBuf>,

    /// resume-storm: how the clients lose their connections.
    #[arg(long, value_enum, default_value = "blip")]
    pub after: After,

    /// resume-storm `--after restart`: shell command that restarts the server and
    /// returns once it listens again; a number on its last stdout line is taken as the
    /// new server PID (for CPU figures).
    #[arg(long)]
    pub restart_cmd: Option<String>,

    /// resume-storm: `redis://127.0.0.1:PORT` of the cluster's Redis, to count its
    /// commands (`INFO commandstats`) over the storm.
    #[arg(long)]
    pub redis_url: Option<String>,

    /// resume-storm: each client waits a random time below this before reconnecting
    /// (0: all at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub reconnect_spread: Duration,

    /// Write JSON lines here (appended) instead of stdout.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// SVG latency plot (default: loadtest/results/SCENARIO-TARGET-UNIXTIME.svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Do not write the SVG plot.
    #[arg(long)]
    pub no_plot: bool,

    /// Internal: this process is worker I of --worker-count (talks JSON lines on stdin/stdout).
    #[arg(long, hide = true)]
    pub worker_index: Option<u64>,

    /// Internal: number of workers.
    #[arg(long, hide = true, default_value_t = 1)]
    pub worker_count: u64,

    /// Internal: run id, to keep user ids unique across runs and workers.
    #[arg(long, hide = true)]
    pub run_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceIps(pub Vec<Ipv4Addr>);

fn parse_label(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        Ok(s.to_string())
    } else {
        Err("label: 1-64 characters of [A-Za-z0-9._-]".into())
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 30s, 2m)"))
}

pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage"))?;
    if !(0.0..=10_000.0).contains(&v) {
        return Err(format!("percentage {v} outside 0..=10000"));
    }
    Ok(v)
}

pub fn parse_payload(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("payload size `{s}` is not a number"))?;
    if !(64..=16 * 1024 * 1024).contains(&n) {
        return Err(format!("payload size {n} outside 64..=16777216 bytes"));
    }
    Ok(n)
}

pub fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("bad address `{a}`"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("bad address `{b}`"))?;
            let (ua, ub) = (u32::from(a), u32::from(b));
            if ub < ua || ub - ua > 4096 {
                return Err(format!(
                    "bad range `{part}` (at most 4097 addresses, low-high)"
                ));
            }
            out.extend((ua..=ub).map(Ipv4Addr::from));
        } else {
            out.push(part.parse().map_err(|_| format!("bad address `{part}`"))?);
        }
    }
    if out.is_empty() {
        return Err("no source address".into());
    }
    if let Some(bad) = out.iter().find(|ip| !ip.is_loopback()) {
        return Err(format!("source address {bad} is not in 127.0.0.0/8"));
    }
    Ok(SourceIps(out))
}

/// Where the target lives, after the loopback check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` for Host headers.
    pub host: String,
}

/// Parses `http://HOST:PORT` / `ws://HOST:PORT` (an optional trailing `/` allowed) and
/// refuses anything but localhost and 127.0.0.0/8.
pub fn parse_target(url: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| anyhow!("--url must start with http:// or ws:// (got `{url}`)"))?;
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') || hostport.contains('@') {
        bail!("--url must be just scheme://host:port (got `{url}`)");
    }
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--url needs an explicit port (got `{url}`)"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in --url `{url}`"))?;
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        h.parse().map_err(|_| {
            anyhow!("--url host must be localhost or a 127.x.y.z address (got `{host}`)")
        })?
    };
    let IpAddr::V4(v4) = ip else {
        bail!("--url: only IPv4 loopback targets are supported (got `{host}`)");
    };
    if !v4.is_loopback() {
        bail!("refusing target {v4}: only 127.0.0.0/8 and localhost are allowed");
    }
    if port == 0 {
        bail!("--url port must not be 0");
    }
    Ok(Target {
        addr: SocketAddr::new(IpAddr::V4(v4), port),
        host: format!("{v4}:{port}"),
    })
}

impl Cli {
    /// Parses the process arguments (exits with status 2 on bad flags, like `Cli::parse`)
    /// and applies the per-scenario defaults.
    pub fn parse_args() -> Self {
        Self::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// `try_parse_from` plus per-scenario defaults for flags the user did not give:
    /// soak runs `-n 500`, `--publish-interval 50ms`, `--app-ping-interval 5s` and a
    /// `--timeout` of its duration plus 5 minutes.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let m = Self::command().try_get_matches_from(args)?;
        let mut c = Self::from_arg_matches(&m)?;
        let defaulted =
            |id: &str| matches!(m.value_source(id), Some(ValueSource::DefaultValue) | None);
        if c.scenario == Scenario::Soak {
            if defaulted("connections") {
                c.connections = 500;
            }
            if defaulted("publish_interval") {
                c.publish_interval = Duration::from_millis(50);
            }
            if defaulted("app_ping_interval") {
                c.app_ping_interval = Duration::from_secs(5);
            }
            if defaulted("timeout") {
                c.timeout = c.duration + Duration::from_secs(300);
            }
        }
        if c.scenario == Scenario::ResumeStorm {
            // Recorded events per stream before the drop, and during the gap: both
            // within the default --history-size 100, so a blip is recoverable.
            if defaulted("warmup") {
                c.warmup = 5;
            }
            if defaulted("broadcasts") {
                c.broadcasts = 20;
            }
            // Every storm publish fans out to all N clients.
            if defaulted("publish_interval") {
                c.publish_interval = Duration::from_millis(200);
            }
        }
        Ok(c)
    }

    /// Cross-flag checks that clap cannot express.
    pub fn validate(&self) -> Result<Target> {
        let t = parse_target(&self.url)?;
        for url in &self.ws_urls {
            parse_target(url).with_context(|| format!("--ws-url {url}"))?;
        }
        if self.scenario == Scenario::Soak {
            if self.server_pid.is_none() {
                bail!("soak needs --server-pid (it samples the server's RSS and open fds)");
            }
            if self.procs != 1 {
                bail!("soak runs in one process (--procs 1)");
            }
            if self.duration < Duration::from_secs(20) {
                bail!("soak needs -d of at least 20s (one RSS/fd sample a second, 20% warm-up)");
            }
            if self.timeout <= self.duration {
                bail!("--timeout must be longer than -d");
            }
        }
        if self.scenario == Scenario::ResumeStorm {
            if self.after == After::Restart && self.restart_cmd.is_none() {
                bail!("resume-storm --after restart needs --restart-cmd (loadtest/resume-storm.sh gives one)");
            }
            if self.warmup == 0 {
                bail!(
                    "resume-storm needs --warmup of at least 1 (each client must know a position)"
                );
            }
            if let Some(u) = &self.redis_url {
                parse_redis_url(u)?;
            }
        }
        if self.payload.is_empty() {
            bail!("--payload needs at least one size");
        }
        if self.procs > self.connections {
            bail!(
                "--procs {} is more than --connections {}",
                self.procs,
                self.connections
            );
        }
        Ok(t)
    }
}

/// `redis://HOST:PORT[/DB]` on loopback, as a socket address.
pub fn parse_redis_url(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| anyhow!("--redis-url must start with redis:// (got `{url}`)"))?;
    let hostport = rest.split('/').next().unwrap_or("");
    Ok(parse_target(&format!("http://{hostport}"))
        .with_context(|| format!("--redis-url {url}"))?
        .addr)
}

/// Worker `index`'s share of `n`: n/count, the first n%count workers one more.
pub fn share(n: u64, index: u64, count: u64) -> u64 {
    let count = count.max(1);
    n / count + u64::from(index < n % count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wsgate-loadtest").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_flags() {
        let c = cli(&[
            "fanout",
            "-n",
            "500",
            "--payload",
            "100,4096,65536",
            "--procs",
            "2",
        ])
        .unwrap();
        assert_eq!(c.scenario, Scenario::Fanout);
        assert_eq!(c.connections, 500);
        assert_eq!(c.payload, vec![100, 4096, 65536]);
        assert_eq!(c.procs, 2);
        assert_eq!(c.source_ips.0.len(), 8);
        assert_eq!(c.duration, Duration::from_secs(10));
        let c = cli(&[
            "connect",
            "--hold",
            "1m",
            "--server-pid",
            "42",
            "--target",
            "node-ws",
        ])
        .unwrap();
        assert_eq!(c.hold, Some(Duration::from_secs(60)));
        assert_eq!(c.server_pid, Some(42));
        assert_eq!(c.target, "node-ws");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(cli(&["nope"]).is_err());
        assert!(cli(&["ping", "-n", "0"]).is_err());
        assert!(cli(&["ping", "--payload", "10"]).is_err());
        assert!(cli(&["ping", "--duration", "ten"]).is_err());
        assert!(cli(&["ping", "--target", "a b"]).is_err());
        assert!(cli(&["ping", "--source-ips", "10.0.0.1"]).is_err());
        assert!(cli(&["ping", "--source-ips", "127.0.0.9-127.0.0.2"]).is_err());
    }

    #[test]
    fn source_ip_ranges() {
        let s = parse_source_ips("127.0.0.2-127.0.0.4,127.0.1.1").unwrap();
        assert_eq!(
            s.0,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4),
                Ipv4Addr::new(127, 0, 1, 1)
            ]
        );
        assert!(parse_source_ips("").is_err());
        assert!(parse_source_ips("127.0.0.1-128.0.0.1").is_err());
    }

    #[test]
    fn target_must_be_loopback() {
        let t = parse_target("http://127.0.0.1:9001").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:9001");
        assert!(parse_target("ws://localhost:80/").is_ok());
        assert!(parse_target("http://127.9.8.7:1").is_ok());
        for bad in [
            "http://10.0.0.1:80",
            "http://192.168.1.1:80",
            "http://8.8.8.8:80",
            "http://example.com:80",
            "http://[::1]:80",
            "https://127.0.0.1:80",
            "http://127.0.0.1",
            "http://127.0.0.1:80/x",
            "http://user@127.0.0.1:80",
            "http://127.0.0.1:0",
        ] {
            assert!(parse_target(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn shares_split_n() {
        let parts: Vec<u64> = (0..3).map(|i| share(10, i, 3)).collect();
        assert_eq!(parts, vec![4, 3, 3]);
        assert_eq!((0..7).map(|i| share(100_001, i, 7)).sum::<u64>(), 100_001);
        assert_eq!(share(5, 0, 0), 5);
    }

    #[test]
    fn soak_defaults() {
        let args = |a: &[&str]| {
            Cli::try_parse_args(std::iter::once("wsgate-loadtest").chain(a.iter().copied()))
                .unwrap()
        };
        let c = args(&["soak", "-d", "30m", "--server-pid", "1"]);
        assert_eq!(c.connections, 500);
        assert_eq!(c.churn, 20);
        assert_eq!(c.publish_interval, Duration::from_millis(50));
        assert_eq!(c.app_ping_interval, Duration::from_secs(5));
        assert_eq!(c.timeout, Duration::from_secs(35 * 60));
        assert_eq!(c.rss_growth_tolerance, 10.0);
        assert_eq!(c.fd_growth_tolerance, 2.0);
        assert!(c.validate().is_ok());
        let c = args(&[
            "soak",
            "-n",
            "50",
            "--publish-interval",
            "5ms",
            "--timeout",
            "1h",
        ]);
        assert_eq!(c.connections, 50);
        assert_eq!(c.publish_interval, Duration::from_millis(5));
        assert_eq!(c.timeout, Duration::from_secs(3600));
        assert!(c.validate().is_err(), "soak without --server-pid");
        let c = args(&["soak", "-d", "5s", "--server-pid", "1"]);
        assert!(c.validate().is_err(), "too short");
        // other scenarios keep the global defaults
        let c = args(&["churn"]);
        assert_eq!(c.connections, 100);
        assert_eq!(c.publish_interval, Duration::from_millis(10));
        assert!(cli(&["soak", "--rss-growth-tolerance", "-3"]).is_err());
        assert_eq!(parse_percent("12.5%"), Ok(12.5));
    }

    #[test]
    fn resume_storm_flags() {
        let args = |a: &[&str]| {
            Cli::try_parse_args(std::iter::once("wsgate-loadtest").chain(a.iter().copied()))
                .unwrap()
        };
        let c = args(&["resume-storm", "-n", "200"]);
        assert_eq!((c.after, c.warmup, c.broadcasts), (After::Blip, 5, 20));
        assert_eq!(c.publish_interval, Duration::from_millis(200));
        assert!(c.validate().is_ok());
        let c = args(&["resume-storm", "--after", "restart", "-m", "7"]);
        assert_eq!(c.broadcasts, 7);
        assert!(c.validate().is_err(), "restart without --restart-cmd");
        let c = args(&[
            "resume-storm",
            "--after",
            "restart",
            "--restart-cmd",
            "true",
        ]);
        assert!(c.validate().is_ok());
        let c = args(&["resume-storm", "--redis-url", "redis://10.0.0.1:6379"]);
        assert!(c.validate().is_err(), "Redis off loopback");
        assert_eq!(
            parse_redis_url("redis://127.0.0.1:6390/0").unwrap(),
            "127.0.0.1:6390".parse().unwrap()
        );
        assert!(parse_redis_url("http://127.0.0.1:6390").is_err());
        let c = args(&["resume-storm", "--warmup", "0"]);
        assert!(c.validate().is_err(), "no position without a warm-up");
    }

    #[test]
    fn validate_cross_flags() {
        let c = cli(&["ping", "-n", "2", "--procs", "3"]).unwrap();
        assert!(c.validate().is_err());
        let c = cli(&["ping", "--url", "http://10.1.1.1:80"]).unwrap();
        assert!(c.validate().is_err());
        let c = cli(&["ping", "--url", "http://127.0.0.1:9001"]).unwrap();
        assert!(c.validate().is_ok());
    }
}
