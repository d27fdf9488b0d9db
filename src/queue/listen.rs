//! Queue wake-ups across server instances sharing one PostgreSQL database: every local
//! bump is sent as `NOTIFY runway_queue`, and every notification from another instance
//! bumps the local queue, so a poll held by one instance wakes when another creates a
//! job. The connection is re-made with capped backoff when it drops.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::Queue;

pub const CHANNEL: &str = "runway_queue";

/// Starts the listener; bumps of `queue` are sent to the other instances from now on.
pub fn spawn(url: String, queue: Arc<Queue>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<bool>();
    queue.set_broadcast(tx);
    let instance = uuid::Uuid::new_v4().simple().to_string();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match run(&url, &queue, &instance, &mut rx).await {
                Ok(()) => return, // the queue is gone: the server stopped
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "queue listener lost its connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    // Anything may have happened meanwhile: let held polls look again.
                    queue.bump_all_local();
                }
            }
        }
    });
}

async fn run(
    url: &str,
    queue: &Queue,
    instance: &str,
    outgoing: &mut mpsc::UnboundedReceiver<bool>,
) -> anyhow::Result<()> {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let (message_tx, mut messages) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            if message_tx.send(message).is_err() {
                break;
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // The payload: the sending instance, and ` all` when every held poll is to look.
    let notify = |all: bool| {
        let suffix = if all { " all" } else { "" };
        format!("SELECT pg_notify('{CHANNEL}', '{instance}{suffix}')")
    };
    let result = loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let (from, all) = match n.payload().strip_suffix(" all") {
                        Some(from) => (from, true),
                        None => (n.payload(), false),
                    };
                    match (from != instance, all) {
                        (true, true) => queue.bump_all_local(),
                        (true, false) => queue.bump_local(),
                        (false, _) => {}
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e.into()),
                None => break Err(anyhow::anyhow!("connection closed")),
            },
            bump = outgoing.recv() => match bump {
                Some(mut all) => {
                    // Several bumps in a burst need one notification.
                    while let Ok(next) = outgoing.try_recv() {
                        all |= next;
                    }
                    if let Err(e) = client.batch_execute(&notify(all)).await {
                        break Err(e.into());
                    }
                }
                // The queue is gone: the server stopped.
                None => break Ok(()),
            },
        }
    };
    driver.abort();
    result
}
