//! The `herald` command: parses arguments, loads the config, sets up
//! tracing and signals, binds the socket and hands over to `herald::run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use argh::FromArgs;
use futures_util::StreamExt;
use herald::clock::Clock;
use herald::config::{self, Config, ConfigError};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio_rustls::TlsAcceptor;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Tells external systems about local events, durably.
#[derive(FromArgs)]
struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(Serve),
    CheckConfig(CheckConfig),
    Token(TokenCmd),
    Status(Status),
    Attention(Attention),
    Logs(Logs),
    Export(Export),
    Retry(Retry),
    Run(Run),
    ReactivateWebhook(ReactivateWebhook),
    ReactivateNotification(ReactivateNotification),
    Acknowledge(Acknowledge),
    Resolve(Resolve),
    Assign(Assign),
}

/// Run the daemon.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct Serve {
    /// config file; else $HERALD_CONFIG, else /etc/herald/herald.toml if it exists, else built-in defaults
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Validate a config file, and the files it names, and exit (78 when invalid).
#[derive(FromArgs)]
#[argh(subcommand, name = "check-config")]
struct CheckConfig {
    /// config file; else $HERALD_CONFIG, else /etc/herald/herald.toml
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Print a new random token and the token_sha256 line for the config.
#[derive(FromArgs)]
#[argh(subcommand, name = "token")]
struct TokenCmd {}

/// A command that talks to the local daemon: its own fields, then how to
/// reach the daemon (`--url`, `--token`, `--config`), the same for all.
macro_rules! client_command {
    ($(#[$doc:meta])* $name:ident = $cmd:literal { $($(#[$fattr:meta])* $field:ident: [$($ty:tt)+],)* }) => {
        $(#[$doc])*
        #[derive(FromArgs)]
        #[argh(subcommand, name = $cmd)]
        struct $name {
            $($(#[$fattr])* $field: $($ty)+,)*
            /// base URL of the daemon; default from the config's server.listen
            #[argh(option)]
            url: Option<String>,
            /// token; else $HERALD_TOKEN, else the generated <storage.dir>/admin.token
            #[argh(option)]
            token: Option<String>,
            /// config file; else $HERALD_CONFIG, else /etc/herald/herald.toml if it exists
            #[argh(option)]
            config: Option<PathBuf>,
        }
    };
}

client_command! {
    /// Ask the local daemon how it is doing.
    Status = "status" {}
}

client_command! {
    /// List what needs attention (exit 1 when something does, 0 when nothing).
    Attention = "attention" {
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

client_command! {
    /// Show an execution's log lines.
    Logs = "logs" {
        /// the execution (exe_...)
        #[argh(positional)]
        execution: [String],
        /// only this level: info, warn or error
        #[argh(option)]
        level: [Option<String>],
        /// only this category: external, configuration, mapping, technical or cascade
        #[argh(option)]
        category: [Option<String>],
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

client_command! {
    /// Write an execution's export (CSV or XLSX) to a file.
    Export = "export" {
        /// the execution (exe_...)
        #[argh(positional)]
        execution: [String],
        /// csv or xlsx; else what the file's name ends with
        #[argh(option)]
        format: [Option<String>],
        /// the file to write (FILE.csv or FILE.xlsx)
        #[argh(option, short = 'o')]
        output: [PathBuf],
    }
}

client_command! {
    /// Retry an action now (one attempt, counted).
    Retry = "retry" {
        /// the action (act_...)
        #[argh(positional)]
        action: [String],
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

client_command! {
    /// Run a schedule now.
    Run = "run" {
        /// the schedule's name
        #[argh(positional)]
        schedule: [String],
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

client_command! {
    /// Reactivate a deactivated webhook, replaying its buffer with --replay.
    ReactivateWebhook = "reactivate-webhook" {
        /// the webhook (wh_...)
        #[argh(positional)]
        webhook: [String],
        /// deliver the buffered events (else they are discarded)
        #[argh(switch)]
        replay: [bool],
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

client_command! {
    /// Reactivate a suspended change notification.
    ReactivateNotification = "reactivate-notification" {
        /// the system
        #[argh(positional)]
        system: [String],
        /// the event name
        #[argh(positional)]
        event: [String],
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

client_command! {
    /// Acknowledge a KO execution (its errors so far) or an action closed unsuccessfully: it leaves the worklist.
    Acknowledge = "acknowledge" {
        /// the execution (exe_...) or the action (act_...)
        #[argh(positional)]
        id: [String],
        /// what you found or did, kept in the execution's log
        #[argh(option)]
        note: [Option<String>],
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

client_command! {
    /// Resolve a to-do action: --completed or --not-completed.
    Resolve = "resolve" {
        /// the action (act_...)
        #[argh(positional)]
        action: [String],
        /// it was done (successfully_completed)
        #[argh(switch)]
        completed: [bool],
        /// it could not be done (unsuccessfully_completed)
        #[argh(switch)]
        not_completed: [bool],
        /// what you did, kept in the interface's log
        #[argh(option)]
        note: [Option<String>],
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

client_command! {
    /// Assign a to-do action to another queue or a person.
    Assign = "assign" {
        /// the action (act_...)
        #[argh(positional)]
        action: [String],
        /// the queue that takes it
        #[argh(option)]
        queue: [Option<String>],
        /// the person who takes it
        #[argh(option)]
        assignee: [Option<String>],
        /// why, kept in the interface's log
        #[argh(option)]
        note: [Option<String>],
        /// print JSON for scripts
        #[argh(switch)]
        json: [bool],
    }
}

/// `--config`, else `$HERALD_CONFIG`.
fn config_arg(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        std::env::var_os("HERALD_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let Some(command) = cli.command else {
        if cli.version {
            println!("herald {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        eprintln!("herald: say what to do: serve, check-config, token or status (herald --help)");
        return ExitCode::from(2);
    };
    match command {
        Command::Serve(Serve { config }) => {
            let config = match load(config_arg(config)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_tracing();
            // Every fault of the configuration, the files it names included,
            // exits 78 before anything listens: systemd does not restart-loop.
            let tls = match check_files(&config) {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("herald: {e}");
                    return ExitCode::from(config::EX_CONFIG as u8);
                }
            };
            journal(&config);
            match serve(config, tls) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("herald: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig(CheckConfig { config }) => {
            let Some(path) = config_arg(config).or_else(system_config) else {
                eprintln!(
                    "herald: no config file to check: pass --config FILE or set HERALD_CONFIG ({} does not exist)",
                    config::SYSTEM_PATH
                );
                return ExitCode::from(config::EX_CONFIG as u8);
            };
            let c = match load(Some(path)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = check_files(&c) {
                eprintln!("herald: {e}");
                return ExitCode::from(config::EX_CONFIG as u8);
            }
            println!(
                "config OK: listen {}, storage {}, {} account(s), time zone {}",
                c.server.listen,
                c.storage.dir.display(),
                c.accounts.len(),
                c.general.timezone.iana_name().unwrap_or("system")
            );
            ExitCode::SUCCESS
        }
        Command::Token(TokenCmd {}) => {
            let token = herald::auth::new_token();
            println!("token: {token}");
            println!("token_sha256 = \"{}\"", herald::auth::sha256_hex(&token));
            ExitCode::SUCCESS
        }
        // 0 ready, 1 up but not ready (starting, draining, store full), 2
        // refused or unreachable, as every console command.
        Command::Status(st) => console(st.url, st.token, st.config, |d| async move {
            let mut d = d;
            let ready = herald::console::status(&mut d).await?;
            Ok(if ready { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }),
        Command::Attention(a) => console(a.url, a.token, a.config, |d| async move {
            let mut d = d;
            let needs = herald::console::attention(&mut d, a.json).await?;
            Ok(if needs { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }),
        Command::Logs(l) => console(l.url, l.token, l.config, |d| async move {
            let mut d = d;
            herald::console::logs(&mut d, &l.execution, l.level.as_deref(), l.category.as_deref(), l.json).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Export(e) => console(e.url, e.token, e.config, |d| async move {
            herald::console::export(&d, &e.execution, e.format.as_deref(), &e.output).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Retry(r) => console(r.url, r.token, r.config, |d| async move {
            herald::console::retry(&d, &r.action, r.json).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Run(r) => console(r.url, r.token, r.config, |d| async move {
            herald::console::run(&d, &r.schedule, r.json).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::ReactivateWebhook(w) => console(w.url, w.token, w.config, |d| async move {
            herald::console::reactivate_webhook(&d, &w.webhook, w.replay, w.json).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::ReactivateNotification(n) => console(n.url, n.token, n.config, |d| async move {
            herald::console::reactivate_notification(&d, &n.system, &n.event, n.json).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Acknowledge(a) => console(a.url, a.token, a.config, |d| async move {
            herald::console::acknowledge(&d, &a.id, a.note, a.json).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Resolve(r) => console(r.url, r.token, r.config, |d| async move {
            let completed = match (r.completed, r.not_completed) {
                (true, false) => true,
                (false, true) => false,
                _ => bail!("say how it ended: --completed or --not-completed"),
            };
            herald::console::resolve(&d, &r.action, completed, r.note, r.json).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Assign(a) => console(a.url, a.token, a.config, |d| async move {
            if a.queue.is_none() && a.assignee.is_none() {
                bail!("say to whom: --queue QUEUE, --assignee PERSON, or both");
            }
            herald::console::assign(&d, &a.action, a.queue, a.assignee, a.note, a.json).await?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// Runs a console command against the local daemon; 2 when it failed.
fn console<F, Fut>(url: Option<String>, token: Option<String>, config: Option<PathBuf>, f: F) -> ExitCode
where
    F: FnOnce(herald::console::Daemon) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let config = match load(config_arg(config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = daemon(&config, url, token).and_then(|d| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(f(d))
    });
    result.unwrap_or_else(|e| {
        eprintln!("herald: {e:#}");
        ExitCode::from(2)
    })
}

/// Where the local daemon is (`--url`, else the config's `server.listen`)
/// and the token (`--token`, `$HERALD_TOKEN`, else the generated admin token).
fn daemon(config: &Config, url: Option<String>, token: Option<String>) -> anyhow::Result<herald::console::Daemon> {
    let url = url.unwrap_or_else(|| {
        let mut addr = config.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    });
    let token = match token.or_else(|| std::env::var("HERALD_TOKEN").ok().filter(|t| !t.is_empty())) {
        Some(t) => t,
        None => {
            let path = config.storage.dir.join(herald::auth::BOOTSTRAP_FILE);
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_string())
                .with_context(|| {
                    format!(
                        "no token: pass --token or set HERALD_TOKEN (and {} is not readable)",
                        path.display()
                    )
                })?
        }
    };
    Ok(herald::console::Daemon {
        url,
        token,
        tz: config.general.timezone.clone(),
    })
}

fn system_config() -> Option<PathBuf> {
    let system = PathBuf::from(config::SYSTEM_PATH);
    system.exists().then_some(system)
}

/// The config from `path`, else the system file if it exists, else defaults.
fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let path = path.or_else(system_config);
    let result: Result<Config, ConfigError> = match &path {
        Some(p) => Config::load(p),
        None => Ok(Config::defaults()),
    };
    result.map_err(|e| {
        eprintln!("herald: {e}");
        ExitCode::from(config::EX_CONFIG as u8)
    })
}

/// Logs go to journald when systemd captures our output, else to stderr.
/// `RUST_LOG` takes a default level and per-module levels, like
/// `warn,herald=debug`. (tracing's `EnvFilter` would also take span and
/// field filters, at the price of a regex engine in the binary.)
fn init_tracing() {
    let wanted = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let parsed = wanted.as_deref().map(str::parse::<Targets>);
    let filter = match &parsed {
        Some(Ok(targets)) => targets.clone(),
        _ => Targets::new().with_default(tracing::Level::INFO),
    };
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    match journald {
        Some(layer) => tracing_subscriber::registry().with(filter).with(layer).init(),
        None => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_timer(Millis)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    if let (Some(value), Some(Err(e))) = (wanted, parsed) {
        tracing::warn!("RUST_LOG={value:?} is not a list like warn,herald=debug ({e}); logging at info");
    }
}

/// Execution log lines also go to the systemd journal when systemd runs
/// us (or `HERALD_JOURNAL_SOCKET` names a socket), from `general.journal` up.
fn journal(config: &Config) {
    let Some(socket) = herald::journald::socket_from_env() else {
        return;
    };
    let level = config.general.journal;
    match herald::journald::start(socket.clone(), level, &config.general.name) {
        Ok(true) => tracing::info!(
            "execution log lines from {} up also go to the journal ({})",
            format!("{level:?}").to_lowercase(),
            socket.display()
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            "execution log lines cannot go to the journal ({}): {e}",
            socket.display()
        ),
    }
}

/// Checks what the config names on disk: the TLS files (giving the
/// acceptor) and the data directory, which must be creatable and writable.
fn check_files(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    let tls = match &config.server.tls {
        Some(files) => Some(herald::net::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    herald::store::check_dir(&config.storage.dir).map_err(|e| format!("storage.dir: {e}"))?;
    Ok(tls)
}

/// Log lines carry the time as the API shows it: UTC, to the millisecond.
struct Millis;

impl tracing_subscriber::fmt::time::FormatTime for Millis {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        w.write_str(&herald::clock::fmt(jiff::Timestamp::now()))
    }
}

fn serve(config: Config, tls: Option<TlsAcceptor>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let clock = clock()?;
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
        let local = listener.local_addr()?;
        // Tests bind port 0 and read the real port from this line.
        tracing::info!(listen = %local, "listening on {local}");

        let mut signals =
            signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut stop_tx = Some(stop_tx);
            while let Some(signal) = signals.next().await {
                match signal {
                    SIGHUP => {
                        let _ = reload_tx.try_send(());
                    }
                    _ => {
                        if let Some(tx) = stop_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        });
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        herald::run(config, tls, listener, clock, shutdown, reload_rx).await
    })
}

/// The system clock; in test builds, the driven clock when `HERALD_TEST_CLOCK`
/// gives its start.
fn clock() -> anyhow::Result<Clock> {
    let Ok(start) = std::env::var("HERALD_TEST_CLOCK") else {
        return Ok(Clock::system());
    };
    if !cfg!(feature = "test-hooks") {
        tracing::warn!("HERALD_TEST_CLOCK is ignored: this build keeps business time on the system clock");
        return Ok(Clock::system());
    }
    let start = start
        .parse()
        .with_context(|| format!("HERALD_TEST_CLOCK={start:?} is not an RFC 3339 time"))?;
    tracing::warn!(%start, "manual clock for tests: time moves only through POST /v1/test/clock");
    Ok(Clock::manual(start))
}
