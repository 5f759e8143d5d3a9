//! SIGTERM and SIGINT, remembered from the moment the operator starts listening. A signal
//! that comes while the operator is still starting (electing a leader, adopting Leases) is
//! not lost: every part that waits for it afterwards sees it at once.

use tokio::sync::watch;

/// Whether a stop was asked for; cheap to clone, one per waiting part.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Starts listening; call it before anything that should stop on a signal.
    pub fn listen() -> Shutdown {
        let (asked, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            let _ = asked.send(true);
            // The sender stays, so the flag stays readable for every later waiter.
            std::future::pending::<()>().await
        });
        Shutdown(shutdown)
    }

    /// Resolves once a stop was asked for (at once if it already was). The future owns its
    /// own receiver, so it can outlive `self` (the controller's shutdown trigger does).
    pub fn requested(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut asked = self.0.clone();
        async move {
            let _ = asked.wait_for(|asked| *asked).await;
        }
    }
}

async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
