//! Queue wake-ups across server instances sharing one PostgreSQL database: every local
//! bump is sent as `NOTIFY runway_queue`, and every notification from another instance
//! bumps the local queue, so a poll held by one instance wakes when another creates a
//! job. A change to a project or to CI/CD variables is sent the same way, and drops what
//! the other instances' polls keep of them. The connection is re-made with capped backoff
//! when it drops.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::{Broadcast, Queue};

pub const CHANNEL: &str = "runway_queue";

/// Starts the listener; bumps of `queue` are sent to the other instances from now on.
pub fn spawn(url: String, queue: Arc<Queue>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Broadcast>();
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
                    // Anything may have happened meanwhile: let held polls look again,
                    // with what they keep read again.
                    queue.forget_kept_local();
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
    outgoing: &mut mpsc::UnboundedReceiver<Broadcast>,
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
    let result = loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    for heard in heard(n.payload(), instance) {
                        match heard {
                            Broadcast::Forget => queue.forget_kept_local(),
                            Broadcast::BumpAll => queue.bump_all_local(),
                            Broadcast::Bump => queue.bump_local(),
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e.into()),
                None => break Err(anyhow::anyhow!("connection closed")),
            },
            bump = outgoing.recv() => match bump {
                Some(first) => {
                    // Several in a burst need one notification.
                    let mut burst = vec![first];
                    while let Ok(next) = outgoing.try_recv() {
                        burst.push(next);
                    }
                    let payload = payload(instance, &burst);
                    let notify = format!("SELECT pg_notify('{CHANNEL}', '{payload}')");
                    if let Err(e) = client.batch_execute(&notify).await {
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

/// The notification's payload for `burst`: the sending instance alone for a bump (as
/// instances before `forget` existed send it); then `all` when every held poll is to look;
/// `forget` when what polls keep is to be read again, with `bump` when jobs became pending
/// too. A bump of all implies a bump.
fn payload(instance: &str, burst: &[Broadcast]) -> String {
    let has = |b: Broadcast| burst.contains(&b);
    let words = match (
        has(Broadcast::BumpAll),
        has(Broadcast::Bump),
        has(Broadcast::Forget),
    ) {
        (true, _, true) => " all forget",
        (true, _, false) => " all",
        (false, true, true) => " bump forget",
        (false, false, true) => " forget",
        (false, _, false) => "",
    };
    format!("{instance}{words}")
}

/// What a notification from another instance asks of this one, in the order to do it
/// (what is kept is dropped before polls look); nothing for this instance's own.
fn heard(payload: &str, instance: &str) -> Vec<Broadcast> {
    let mut words = payload.split(' ');
    if words.next() == Some(instance) {
        return Vec::new();
    }
    let words: Vec<&str> = words.collect();
    let mut heard = Vec::new();
    if words.contains(&"forget") {
        heard.push(Broadcast::Forget);
    }
    if words.contains(&"all") {
        heard.push(Broadcast::BumpAll);
    } else if words.is_empty() || words.contains(&"bump") {
        heard.push(Broadcast::Bump);
    }
    heard
}

#[cfg(test)]
mod tests {
    use super::*;
    use Broadcast::*;

    #[test]
    fn a_burst_is_one_payload_that_the_others_read_back() {
        let cases: &[(&[Broadcast], &str, &[Broadcast])] = &[
            (&[Bump, Bump], "a", &[Bump]),
            (&[Bump, BumpAll], "a all", &[BumpAll]),
            (&[Forget], "a forget", &[Forget]),
            (&[Bump, Forget, Bump], "a bump forget", &[Forget, Bump]),
            (&[Forget, BumpAll], "a all forget", &[Forget, BumpAll]),
        ];
        for (burst, sent, read) in cases {
            assert_eq!(payload("a", burst), *sent);
            assert_eq!(heard(sent, "b"), *read, "{sent}");
            assert_eq!(heard(sent, "a"), [], "its own: {sent}");
        }
    }
}
