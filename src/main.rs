//! `classroom serve` runs the server; `classroom invite` prints a link into a lesson.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use classroom::config::{Config, LogFormat, Overrides};
use classroom::invite;
use classroom_signaling::token::{Claims, Role, TokenIssuer};

/// The demo lesson whose links `serve` prints, so a first run has something to open.
const DEMO_ROOM: &str = "demo";
const DEMO_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Parser)]
#[command(
    name = "classroom",
    version,
    about = "Media server for remote school lessons"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, classroom serves.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print an invite link (one line on standard output) for a person in a lesson.
    Invite(InviteArgs),
    /// Print a one-time sign-in link (one line on standard output) for a roster person.
    SigninLink(SigninLinkArgs),
    /// Roster management.
    #[command(subcommand)]
    Roster(RosterCommand),
}

#[derive(Subcommand)]
enum RosterCommand {
    /// Import a OneRoster 1.2 CSV export (a directory or a ZIP file) into the database. All or
    /// nothing: on any problem nothing is applied and each problem is printed as file:line.
    Import(RosterImportArgs),
}

#[derive(Args)]
struct RosterImportArgs {
    /// The directory holding manifest.csv, users.csv, ... or a ZIP of them.
    path: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct SigninLinkArgs {
    /// The person's roster id (sourcedId).
    #[arg(long)]
    person: String,
    /// How long the link stays valid, e.g. 15m, 2h. It works once.
    #[arg(long, default_value = "15m", value_parser = parse_ttl)]
    ttl: Duration,
    /// Base of the link [default: public_url, or derived from the http address].
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Where the configuration comes from; shared by both commands so that they agree on the secret.
#[derive(Args, Clone)]
struct ConfigArgs {
    /// Config file [default: config/classroom.toml, if it exists].
    #[arg(long, value_name = "PATH", env = "CLASSROOM_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for state that survives restarts (the generated token secret).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Web server address (pages, /ws, /healthz).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Address of the metrics listener (/metrics, /healthz).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// UDP address of the media socket.
    #[arg(long, value_name = "ADDR")]
    media_bind: Option<SocketAddr>,
    /// TCP address of the ICE-TCP listener (default: the address and port of --media-bind).
    #[arg(long, value_name = "ADDR")]
    media_tcp_bind: Option<SocketAddr>,
    /// Offer no ICE-TCP candidates (UDP only).
    #[arg(long)]
    no_media_tcp: bool,
    /// Addresses browsers send media to (comma-separated). Default: every address of this
    /// machine when the media socket binds a wildcard address.
    #[arg(long, value_name = "IP[,IP]", value_delimiter = ',')]
    announce: Option<Vec<IpAddr>>,
    /// Base URL of invite links, e.g. https://lessons.example.org.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// PEM certificate chain: serve HTTPS.
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// Log format on standard error.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Args)]
struct InviteArgs {
    /// The lesson (room) the link admits to.
    #[arg(long)]
    room: String,
    /// Display name shown to the others.
    #[arg(long)]
    name: String,
    /// teacher, student or observer.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Stable identity across reconnects [default: from the name, plus a random suffix].
    #[arg(long)]
    identity: Option<String>,
    /// How long the link stays valid, e.g. 90m, 2h, 7days.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Base of the link [default: public_url, or derived from the http address].
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|e| format!("{e}"))
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if ttl < Duration::from_secs(1) {
        return Err("must be at least one second".to_owned());
    }
    Ok(ttl)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Invite(args)) => invite(args),
        Some(Command::SigninLink(args)) => signin_link(args),
        Some(Command::Roster(RosterCommand::Import(args))) => roster_import(args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classroom: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &ConfigArgs, cli: Overrides) -> anyhow::Result<Config> {
    let cli = Overrides {
        data_dir: args.data_dir.clone(),
        ..cli
    };
    Ok(Config::load(
        args.config.as_deref(),
        Overrides::from_env()?,
        cli,
    )?)
}

/// Raises the soft open-file limit to the hard one. Every participant holds a WebSocket (and the
/// database, the media socket and the web client's files take a few more): the usual soft limit
/// of 1024 would refuse connections from about a thousand pupils on, long before the hard limit
/// (often 512k) or the machine would.
fn open_files_for_a_school() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0
    };
    if raised {
        tracing::info!(
            from = limit.rlim_cur,
            to = limit.rlim_max,
            "open-file limit raised"
        );
    } else {
        tracing::warn!(
            limit = limit.rlim_cur,
            "cannot raise the open-file limit; each pupil holds one connection"
        );
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(
        &args.config,
        Overrides {
            http: args.http,
            metrics_listen: args.metrics_listen,
            media_bind: args.media_bind,
            media_tcp: args.no_media_tcp.then_some(false),
            media_tcp_bind: args.media_tcp_bind,
            media_announce: args.announce,
            public_url: args.public_url,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            log_format: args.log_format.map(|f| match f {
                LogFormatArg::Human => LogFormat::Human,
                LogFormatArg::Json => LogFormat::Json,
            }),
            ..Overrides::default()
        },
    )?;
    classroom::logging::init(&config.log)?;
    open_files_for_a_school();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Installed before anything slow, so an early Ctrl-C still shuts down in order.
        let stop =
            classroom::server::shutdown_signal().context("cannot install signal handlers")?;
        let server = classroom::server::start(config).await?;
        print_banner(&server);
        let stop = async move {
            stop.await;
            // Shutdown is bounded anyway, but an operator pressing Ctrl-C again means now.
            if let Ok(again) = classroom::server::shutdown_signal() {
                tokio::spawn(async move {
                    again.await;
                    eprintln!("classroom: second signal, exiting without waiting");
                    std::process::exit(130);
                });
            }
        };
        // Every step of the shutdown is bounded, so this returns even with stuck clients.
        server.run_until(stop).await
    })?;
    // A media thread that would not stop is still parked in a blocking task; it must not keep
    // the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn print_banner(server: &classroom::ServerHandle) {
    let link = |name: &str, role: Role| {
        let claims = Claims::new(
            DEMO_ROOM,
            &invite::default_identity(name, role),
            name,
            role,
            DEMO_TTL,
        );
        server.invite_link(&claims)
    };
    let (teacher, pupil) = match (link("Teacher", Role::Teacher), link("Pupil", Role::Student)) {
        (Ok(t), Ok(p)) => (t, p),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("cannot make the demo links: {e}");
            return;
        }
    };
    println!("classroom is running at {}", server.public_url());
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "Media (UDP) offered to browsers at: {}",
        list(&server.media_announced)
    );
    if !server.media_announced_tcp.is_empty() {
        println!(
            "Media over TCP (for networks that drop UDP) at: {}",
            list(&server.media_announced_tcp)
        );
    }
    println!(
        "  Browsers must reach one of these. Behind NAT, or to offer a public address, set \
         --announce IP[,IP] (media.announce, CLASSROOM_MEDIA_ANNOUNCE); see docs/NETWORK.md."
    );
    println!(
        "Demo lesson (room \"{DEMO_ROOM}\"), links valid for {}:",
        humantime::format_duration(DEMO_TTL)
    );
    println!("  teacher: {teacher}");
    println!("  pupil:   {pupil}");
    println!(
        "Each link admits one person at a time. More: classroom invite --room {DEMO_ROOM} --name NAME --role student"
    );
}

fn invite(args: InviteArgs) -> anyhow::Result<()> {
    let config = load_config(
        &args.config,
        Overrides {
            public_url: args.base_url.clone(),
            ..Overrides::default()
        },
    )?;
    let room = args.room.trim();
    let name = args.name.trim();
    if room.is_empty() {
        bail!("--room must not be empty");
    }
    if name.is_empty() {
        bail!("--name must not be empty");
    }
    let identity = match args.identity.as_deref().map(str::trim) {
        Some("") => bail!("--identity must not be empty"),
        Some(id) => id.to_owned(),
        None => invite::default_identity(name, args.role),
    };
    let (secret, _) = classroom::secret::resolve(&config)?;
    let claims = Claims::new(room, &identity, name, args.role, args.ttl);
    let token = TokenIssuer::new(secret.expose().as_bytes()).issue(&claims)?;
    println!(
        "{}",
        invite::link(&config.public_base_url(config.http), args.role, &token)
    );
    Ok(())
}

fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn signin_link(args: SigninLinkArgs) -> anyhow::Result<()> {
    let config = load_config(
        &args.config,
        Overrides {
            public_url: args.base_url.clone(),
            ..Overrides::default()
        },
    )?;
    let person = args.person.trim().to_owned();
    if person.is_empty() {
        bail!("--person must not be empty");
    }
    small_runtime()?.block_on(async move {
        let db = classroom::server::open_db(&config).await?;
        let result =
            async {
                use classroom::portal::links::{LinkError, mint_signin_link};
                use classroom_domain::{Issuer, MintError};
                let base = config.public_base_url(config.http);
                let now = classroom::portal::unix_now();
                // The operator may mint for anyone; the audit log records it as the command line.
                let link =
                    match mint_signin_link(&db, &base, &Issuer::Cli, &person, args.ttl, now, None)
                        .await
                    {
                        Ok(link) => link,
                        Err(LinkError::Mint(MintError::UnknownPerson(_))) => {
                            bail!(
                                "no person {person:?} in the roster (classroom roster import first)"
                            )
                        }
                        Err(LinkError::Mint(MintError::Disabled)) => {
                            bail!("{person}'s account is disabled")
                        }
                        Err(e) => return Err(anyhow::Error::new(e).context("cannot mint the link")),
                    };
                let url = link.url;
                println!("{url}");
                Ok(())
            }
            .await;
        db.close().await;
        result
    })
}

fn roster_import(args: RosterImportArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config, Overrides::default())?;
    let path = args.path;
    small_runtime()?.block_on(async move {
        let db = classroom::server::open_db(&config).await?;
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner.set_message(format!("checking and importing {}", path.display()));
        let result = if path.is_dir() {
            classroom_domain::import_dir(&db, &path).await
        } else {
            classroom_domain::import_zip(&db, &path).await
        };
        spinner.finish_and_clear();
        db.close().await;
        match result {
            Ok(report) => {
                let rows = [
                    ("orgs", report.orgs),
                    ("academic sessions", report.academic_sessions),
                    ("people", report.people),
                    ("guardian links", report.guardian_links),
                    ("classes", report.classes),
                    ("class terms", report.class_terms),
                    ("enrollments", report.enrollments),
                ];
                println!("imported {}", path.display());
                for (name, c) in rows {
                    println!(
                        "  {name:<18} {:>6} created {:>6} updated {:>6} unchanged {:>6} removed",
                        c.created, c.updated, c.unchanged, c.removed
                    );
                }
                for w in &report.warnings {
                    println!("  warning: {w}");
                }
                Ok(())
            }
            Err(classroom_domain::ImportError::Invalid(problems)) => {
                for p in &problems.0 {
                    eprintln!("{p}");
                }
                bail!(
                    "{} problem(s) in the roster; nothing was imported",
                    problems.0.len()
                )
            }
            Err(e) => Err(anyhow::Error::new(e).context("roster import failed")),
        }
    })
}
