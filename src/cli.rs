//! The `wsgate` binary's logic: parse the command line, then `serve` or
//! `token`. Any configuration error is one line on stderr and exit status 2.
//! `main.rs` only sets the allocator and calls [`run`].

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::auth::mint::mint_token;
use crate::config::{Cli, Command, Config, ServeArgs, TokenArgs};

/// Runs `wsgate` with the process's arguments; the exit status to return.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = error.print();
                return if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            let rendered = error.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => token(args),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn token(args: TokenArgs) -> ExitCode {
    let Some(secret) = args.jwt_secret.filter(|s| !s.is_empty()) else {
        return fail("--jwt-secret: required (or WSGATE_JWT_SECRET)");
    };
    match mint_token(&secret, &args.sub, args.ttl, &args.claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot sign the token: {e}")),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    crate::telemetry::init(config.log_format, std::env::var("RUST_LOG").ok().as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let dev = config.dev;
        let secret = config.auth.secret.clone();
        let api_key = config.api_key.clone();
        let server = match crate::Server::bind(config).await {
            Ok(server) => server,
            Err(e) => return fail(e),
        };
        let addr = server.local_addr();
        if dev {
            print_dev_banner(addr, secret.as_deref(), api_key.as_deref());
        }
        if let Err(e) = crate::shutdown::cancel_on_signal(server.shutdown_token()) {
            return fail(format!("cannot install signal handlers: {e}"));
        }
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "wsgate listening on {}", server.url());
        let _ = stdout.flush();
        match server.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `--dev`: what a developer needs to connect right away, on stderr.
fn print_dev_banner(addr: std::net::SocketAddr, secret: Option<&str>, api_key: Option<&str>) {
    let secret = secret.unwrap_or_default();
    let api_key = api_key.unwrap_or_default();
    let token = mint_token(
        secret,
        "dev-user",
        std::time::Duration::from_secs(24 * 3600),
        &[],
    )
    .unwrap_or_default();
    eprintln!(
        "wsgate dev mode\n  jwt secret : {secret}\n  api key    : {api_key}\n  sample token (user dev-user, 24h):\n    {token}\n  connect    : ws://{addr}/api/v1/ws/{token}\n  console    : http://{addr}/console#token={token}&api_key={api_key}\n  publish    : curl -s -X POST http://{addr}/api/v1/events -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' -d '{{\"type\":\"system.notification\",\"data\":{{\"message\":\"hello\"}},\"all\":true}}'"
    );
}
