//! Unix signals to the daemon: SIGTERM and SIGINT start a graceful
//! shutdown, SIGHUP reloads the model.

use super::Daemon;

impl Daemon {
    /// Routes SIGTERM and SIGINT to [`Controller::shutdown`](super::Controller::shutdown)
    /// and SIGHUP to [`Controller::reload`](super::Controller::reload), on
    /// the daemon's runtime, for as long as it runs.
    pub fn handle_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = self.runtime();
        let _guard = runtime.enter();
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let controller = self.controller();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down"); controller.shutdown(); }
                    _ = interrupt.recv() => { tracing::info!("SIGINT: shutting down"); controller.shutdown(); }
                    _ = hangup.recv() => { tracing::info!("SIGHUP: reloading the model"); controller.reload(); }
                }
            }
        });
        Ok(())
    }
}
