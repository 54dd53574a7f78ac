//! An ingest server with a live dashboard, on edgestream's tokio host.
//!
//! ```text
//! cargo run --release --features tokio --example ingest_server -- --demo
//! # then open http://127.0.0.1:8080/
//! ```
//!
//! Flags: `--addr 127.0.0.1:8080`, `--data-dir data` (archive files and the
//! snapshot), `--config examples/ingest_server/config.yaml` (a `pipeline:`
//! and a `host:` section; YAML, or TOML for a `.toml` file with the `toml`
//! feature), `--demo` (a built-in generator posts synthetic
//! telemetry for three tenants, with spikes that fire the alert rules),
//! `--exit-after SECS` (shut down gracefully after that long, for scripts).
//!
//! Routes: `POST /ingest?tenant=…` (or a bearer token when the config has
//! `auth`), `GET /ws`, `GET /sse`, `GET /api/metrics`, `GET /api/health`,
//! `GET /api/export`, and the dashboard at `/`.

mod app;
mod demo;

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edgestream::host::tokio::{Host, HostConfig, LocalDir};
use edgestream::pipeline::PipelineConfig;
use serde::Deserialize;

const DEFAULT_CONFIG: &str = include_str!("config.yaml");

/// The config file: the pipeline's and the host's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerConfig {
    pub(crate) pipeline: PipelineConfig,
    #[serde(default)]
    pub(crate) host: HostConfig,
    /// The window operator `/api/metrics` reads by default.
    #[serde(default = "default_metrics_window")]
    pub(crate) metrics_window: String,
}

fn default_metrics_window() -> String {
    "1s".into()
}

impl ServerConfig {
    /// Reads YAML (or JSON), or TOML when `toml` is true (build with the
    /// `toml` feature).
    pub(crate) fn parse(text: &str, toml: bool) -> Result<ServerConfig, Box<dyn Error>> {
        if toml {
            #[cfg(feature = "toml")]
            return Ok(::toml::from_str(text)?);
            #[cfg(not(feature = "toml"))]
            return Err("a TOML config needs the `toml` feature: add `--features tokio,toml`".into());
        }
        Ok(serde_yaml_ng::from_str(text)?)
    }
}

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    data_dir: PathBuf,
    config: Option<PathBuf>,
    demo: bool,
    exit_after: Option<Duration>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        addr: "127.0.0.1:8080".parse()?,
        data_dir: PathBuf::from("data"),
        config: None,
        demo: false,
        exit_after: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse()?,
            "--data-dir" => args.data_dir = value()?.into(),
            "--config" => args.config = Some(value()?.into()),
            "--demo" => args.demo = true,
            "--exit-after" => args.exit_after = Some(Duration::from_secs_f64(value()?.parse()?)),
            "--help" | "-h" => {
                println!(
                    "usage: ingest_server [--addr HOST:PORT] [--data-dir DIR] [--config FILE] [--demo] [--exit-after SECS]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other:?} (try --help)").into()),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = parse_args()?;
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => DEFAULT_CONFIG.to_owned(),
    };
    let toml = args.config.as_ref().is_some_and(|p| p.extension().is_some_and(|e| e == "toml"));
    let mut config = ServerConfig::parse(&text, toml)?;
    if config.host.snapshot.is_none() {
        config.host.snapshot = Some(args.data_dir.join("state.bin"));
    }
    let auth = config.pipeline.auth.is_some();
    let archive_dir = args.data_dir.join("archive");
    // The export reads the archive's files in their default partition layout.
    let archive =
        config.pipeline.archive.as_ref().filter(|a| a.sink.path == edgestream::sink::DEFAULT_TEMPLATE).map(|a| {
            app::Archive {
                dir: archive_dir.clone(),
                parquet: !matches!(a.format, edgestream::pipeline::ArchiveFormat::Csv),
            }
        });
    let max_body = config.pipeline.limits.max_batch_bytes;
    let host = Host::builder(config.pipeline).config(config.host).files(LocalDir::new(archive_dir)).start().await?;
    let handle = host.handle();
    let state = app::AppState { host: handle.clone(), auth, metrics_window: config.metrics_window.into(), archive };
    let router = app::router(state, max_body);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    println!("edgestream ingest server on http://{addr}/ (data in {})", args.data_dir.display());

    if args.demo {
        tokio::spawn(demo::run(handle.clone()));
        println!("demo: posting synthetic telemetry for {:?}", demo::TENANTS);
    }

    // On a signal: shut the host down first (every window closes, every
    // file is stored, subscriber sockets close), then stop the server.
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let exit_after = args.exit_after;
    let shutdown = tokio::spawn(async move {
        wait_for_signal(exit_after).await;
        println!("shutting down");
        let report = host.shutdown().await;
        let _ = stopped_tx.send(());
        report
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stopped_rx.await;
        })
        .await?;
    let report = shutdown.await??;
    println!(
        "stopped: {} events accepted, {} files stored ({} rows), {} unstored, {} notifications unsent",
        report.stats.total.admitted,
        report.host.files.written,
        report.host.files.rows,
        report.files_unstored,
        report.notifications_unsent
    );
    Ok(())
}

async fn wait_for_signal(exit_after: Option<Duration>) {
    let timer = async {
        match exit_after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    let terminate = async {
        #[cfg(unix)]
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
        _ = timer => {}
    }
}
