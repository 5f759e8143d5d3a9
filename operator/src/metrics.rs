//! Prometheus metrics and the `/healthz`, `/readyz`, `/metrics` endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub runs: Family<Labels, Counter>,
    pub rows: Family<Labels, Counter>,
    pub reconciles: Counter,
    pub reconcile_failures: Counter,
    pub run_duration: Histogram,
    /// 1 while this replica leads (reconciles); standbys report 0 and are still Ready.
    pub leader: Gauge,
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lakeload_operator");
        let runs = Family::<Labels, Counter>::default();
        let rows = Family::<Labels, Counter>::default();
        let reconciles = Counter::default();
        let reconcile_failures = Counter::default();
        let run_duration = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads, 0 on a standby",
            leader.clone(),
        );
        registry.register("runs", "EtlRuns that reached a phase", runs.clone());
        registry.register("rows", "rows processed by finished runs, by kind", rows.clone());
        registry.register("reconciles", "reconcile calls", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "reconcile calls that failed",
            reconcile_failures.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "duration of finished runs",
            run_duration.clone(),
        );
        Metrics {
            registry,
            runs,
            rows,
            reconciles,
            reconcile_failures,
            run_duration,
            leader,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn phase(&self, phase: &str) {
        self.runs
            .get_or_create(&vec![("phase".into(), phase.into())])
            .inc();
    }

    pub fn rows(&self, kind: &str, n: u64) {
        self.rows
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc_by(n);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn ready(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Serves the endpoints until the process ends. `shared_port`: replicas on the host network
/// of one node bind the same port (SO_REUSEPORT; the kernel spreads connections over them).
/// Every replica answers the probes alike (standbys are ready too); `lakeload_operator_leader`
/// tells a scrape which one it reached.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    shared_port: bool,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(self::metrics))
        .with_state(metrics);
    let listener = if shared_port {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        socket.listen(1024)?
    } else {
        tokio::net::TcpListener::bind(addr).await?
    };
    axum::serve(listener, app).await
}
