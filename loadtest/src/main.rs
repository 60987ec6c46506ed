//! wsgate-loadtest: a load generator for wsgate and the peer servers that speak
//! the bench protocol (shared/peers/PROTOCOL.md). Loopback targets only; every
//! loop is bounded in count and time, and the whole run by `--timeout`.

mod cli;
mod ctl;
mod http;
mod links;
mod procfs;
mod proto;
mod report;
mod scenario;
mod seq;
mod stats;
mod worker;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::Cli;

fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on our own process with a struct we own.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn nofile() -> u64 {
    // SAFETY: getrlimit into a struct we own.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur
        } else {
            0
        }
    }
}

fn main() {
    let cli = Cli::parse_args();
    let target = match cli.validate() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wsgate-loadtest: {e:#}");
            std::process::exit(2);
        }
    };
    raise_nofile();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsgate-loadtest: runtime: {e}");
            std::process::exit(1);
        }
    };
    let cli = Arc::new(cli);
    let timeout = cli.timeout;

    if let Some(index) = cli.worker_index {
        // Child worker: JSON lines on stdin/stdout; exits on Stop, EOF or timeout.
        let run_id = cli.run_id.clone().unwrap_or_else(|| "w".into());
        let count = cli.worker_count;
        let code = rt.block_on(async {
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            let fut = worker::run(
                cli.clone(),
                target,
                index,
                count,
                run_id,
                input,
                tokio::io::stdout(),
            );
            match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    eprintln!("worker {index}: {e:#}");
                    1
                }
                Err(_) => {
                    eprintln!("worker {index}: global timeout");
                    3
                }
            }
        });
        std::process::exit(code);
    }

    let per_proc = cli.connections.div_ceil(cli.procs);
    let limit = nofile();
    if per_proc + 64 > limit {
        eprintln!(
            "wsgate-loadtest: {per_proc} connections per process exceed the open-files limit {limit}; use --procs {}",
            cli.connections.div_ceil(limit.saturating_sub(200).max(1))
        );
        std::process::exit(2);
    }
    let ports = 28_000 * cli.source_ips.0.len() as u64;
    if cli.connections > ports && cli.scenario != cli::Scenario::Churn {
        eprintln!(
            "wsgate-loadtest: warning: {} connections over {} source addresses (~{ports} ports); add --source-ips",
            cli.connections,
            cli.source_ips.0.len()
        );
    }
    eprintln!(
        "wsgate-loadtest: {} against {} ({}) n={} procs={}",
        cli.scenario.name(),
        cli.target,
        target.addr,
        cli.connections,
        cli.procs
    );
    let res = rt.block_on(async {
        tokio::time::timeout(timeout, scenario::run(cli.clone(), target)).await
    });
    let rows = match res {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            eprintln!("wsgate-loadtest: {e:#}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("wsgate-loadtest: global --timeout {:?} reached", timeout);
            std::process::exit(3);
        }
    };
    // Drop the runtime (and any straggling tasks) before printing.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));

    let table = report::table(&rows);
    let warnings = report::warnings(&rows);
    if cli.json.is_some() {
        print!("{table}");
    } else {
        eprint!("{table}");
    }
    for w in &warnings {
        eprintln!("{w}");
    }
    if let Err(e) = report::write_json(&rows, cli.json.as_deref()) {
        eprintln!("wsgate-loadtest: writing JSON: {e:#}");
    }
    if !cli.no_plot {
        let path = cli.plot.clone().unwrap_or_else(|| {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("results")
                .join(format!("{}-{}-{ts}.svg", cli.scenario.name(), cli.target))
        });
        let res = if cli.scenario == cli::Scenario::Soak {
            let title = format!(
                "soak {}: server RSS and open fds, {} (n={}, churn={})",
                humantime::format_duration(cli.duration),
                cli.target,
                cli.connections,
                cli.churn
            );
            scenario::soak::plot(&rows, &title, &path)
        } else {
            let title = format!(
                "{} latency CDF, {} (n={})",
                cli.scenario.name(),
                cli.target,
                cli.connections
            );
            report::plot(&rows, &title, &path)
        };
        match res {
            Ok(()) => eprintln!("plot: {}", path.display()),
            Err(e) => eprintln!("wsgate-loadtest: plot: {e:#}"),
        }
    }
    std::process::exit(report::exit_status(&rows));
}
