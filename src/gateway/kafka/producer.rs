//! The producer task and the handle the HTTP side sends records through.
//!
//! One task owns the krafka producer and takes records from a channel, in order. It only
//! *enqueues* each one (cheap, and keeps produce order = arrival order) and awaits the
//! acknowledgement in a task of its own, so one slow acknowledgement never holds back the
//! records behind it. Acknowledgements go back over a one-shot channel, which the HTTP side
//! awaits on its own runtime.
//!
//! The producer is idempotent with acks=all: its own internal retries cannot duplicate a
//! record. The gateway itself never re-sends: a send whose outcome is unknown is reported
//! as unknown, never tried again, because a second copy could charge twice. When the
//! brokers stop honouring the producer's session (a broker restarted with its state lost),
//! the failed record is reported and later records go to a new session
//! ([`crate::kafka::producer_session`]).

use crate::gateway::metrics::{GatewayMetrics, Produced};
use crate::kafka::{ProducerSession, to_krafka};
use crate::wire::record::{OutgoingRecord, WrittenAt};
use krafka::KrafkaError;
use krafka::error::ErrorCode;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Why a send did not succeed, and whether the record may be in the log anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub possibly_written: bool,
    pub message: String,
}

type Ack = Result<WrittenAt, SendFailure>;

enum SendJob {
    Send {
        record: OutgoingRecord,
        /// `None` for fire-and-forget records (dead letters): failures are logged.
        ack: Option<oneshot::Sender<Ack>>,
    },
    /// Sends everything queued so far, then answers.
    Flush(oneshot::Sender<()>),
}

/// The HTTP side's handle: cheap to clone, usable from any thread or runtime.
#[derive(Clone)]
pub struct SendHandle {
    jobs: mpsc::UnboundedSender<SendJob>,
}

impl SendHandle {
    /// Sends a record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: OutgoingRecord) -> Ack {
        let (ack, acked) = oneshot::channel();
        self.submit(SendJob::Send {
            record,
            ack: Some(ack),
        })?;
        acked.await.unwrap_or_else(|_| Err(stopped(true)))
    }

    /// Sends a record without waiting; a failure is logged with the record's topic and key.
    pub fn send_and_forget(&self, record: OutgoingRecord) {
        let topic = record.topic.clone();
        if let Err(e) = self.submit(SendJob::Send { record, ack: None }) {
            log::error!("cannot send to {topic}: {}", e.message);
        }
    }

    /// Waits until every record handed over before this call is acknowledged or failed.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.submit(SendJob::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }

    fn submit(&self, job: SendJob) -> Result<(), SendFailure> {
        self.jobs.send(job).map_err(|_| stopped(false))
    }
}

fn stopped(possibly_written: bool) -> SendFailure {
    SendFailure {
        possibly_written,
        message: "the Kafka producer has stopped".to_string(),
    }
}

/// Creates the channel; `run` consumes the receiving end on the Kafka runtime.
pub fn channel() -> (SendHandle, SendQueue) {
    let (jobs, queue) = mpsc::unbounded_channel();
    (SendHandle { jobs }, SendQueue(queue))
}

/// The receiving end of the send channel.
pub struct SendQueue(mpsc::UnboundedReceiver<SendJob>);

#[cfg(test)]
impl SendQueue {
    /// The records handed over so far, for tests that stand in for the broker.
    pub(crate) fn take_records(&mut self) -> Vec<OutgoingRecord> {
        std::iter::from_fn(|| self.0.try_recv().ok())
            .filter_map(|job| match job {
                SendJob::Send { record, .. } => Some(record),
                SendJob::Flush(_) => None,
            })
            .collect()
    }

    /// The next record handed over, with the sender its acknowledgement goes back through
    /// (`None` for a fire-and-forget record), for tests that play the broker: answer it,
    /// fail it, or drop it. Waits for one; `None` once every handle is dropped.
    pub(crate) async fn next_send(
        &mut self,
    ) -> Option<(OutgoingRecord, Option<oneshot::Sender<Ack>>)> {
        loop {
            match self.0.recv().await? {
                SendJob::Send { record, ack } => return Some((record, ack)),
                // Dropping `done` ends the flush: a test broker holds nothing back.
                SendJob::Flush(_) => {}
            }
        }
    }
}

/// Feeds queued records to the producer until every handle is dropped.
pub async fn run(
    producer: Arc<ProducerSession>,
    mut queue: SendQueue,
    metrics: Arc<GatewayMetrics>,
) {
    while let Some(job) = queue.0.recv().await {
        let (record, ack) = match job {
            SendJob::Send { record, ack } => (record, ack),
            SendJob::Flush(done) => {
                if let Err(e) = producer.flush().await {
                    log::warn!("flushing the Kafka producer: {e}");
                }
                let _ = done.send(());
                continue;
            }
        };
        // Fire-and-forget records have nobody to report to, so remember what to log.
        let label = ack.is_none().then(|| label(&record));
        let metrics = Arc::clone(&metrics);
        let handed_over = Instant::now();
        match producer.enqueue(to_krafka(record)).await {
            // Not queued: it never left this process.
            Err((session, e)) => {
                producer.renew_after(session, &e);
                finish(ack, label, Err(failure(false, e)), &metrics);
            }
            Ok((session, delivery)) => {
                let producer = Arc::clone(&producer);
                tokio::spawn(async move {
                    let result = producer
                        .outcome(session, delivery)
                        .await
                        .map(|m| WrittenAt {
                            partition: m.partition,
                            offset: m.offset,
                        });
                    if result.is_ok() {
                        // Only dead letters are sent without an acknowledgement channel.
                        let produced = if ack.is_some() {
                            Produced::Request
                        } else {
                            Produced::DeadLetter
                        };
                        metrics.produce_acked(produced, handed_over.elapsed());
                    }
                    finish(ack, label, result.map_err(|e| failure(true, e)), &metrics);
                });
            }
        }
    }
    if let Err(e) = producer.close().await {
        log::warn!("closing the Kafka producer: {e}");
    }
}

fn label(record: &OutgoingRecord) -> String {
    format!(
        "{} (key {})",
        record.topic,
        String::from_utf8_lossy(&record.key)
    )
}

fn finish(
    ack: Option<oneshot::Sender<Ack>>,
    label: Option<String>,
    result: Ack,
    metrics: &GatewayMetrics,
) {
    if result.is_err() {
        metrics.produce_errors.inc();
    }
    match (ack, result) {
        // The waiter may have given up (timeout); its own path reports that.
        (Some(ack), result) => drop(ack.send(result)),
        // Fire-and-forget records are the dead letters.
        (None, Err(e)) => {
            metrics.dlq_write_failures.inc();
            log::error!(
                "send to {} failed: {} (possibly written: {})",
                label.unwrap_or_default(),
                e.message,
                e.possibly_written
            );
        }
        (None, Ok(_)) => {}
    }
}

/// After a record was queued, only a definite "not written" from the client rules out
/// that the broker appended it. An out-of-order sequence is such an answer: the broker
/// refused the batch because it lost an earlier one. A broker's error code is one only
/// when the leader answers it before appending ([`refused_before_append`]): with acks=all
/// an append can be in the leader's log and still be answered with an error (a leader
/// that lost its leadership while waiting for the followers, a request timeout, too few
/// replicas after the append), and that record may be read and charged.
fn failure(queued: bool, error: KrafkaError) -> SendFailure {
    let possibly_written = match &error {
        KrafkaError::DeliveryTimeout {
            possibly_written, ..
        } => *possibly_written,
        KrafkaError::OutOfOrderSequence { .. } => false,
        KrafkaError::Broker { code, .. } => queued && !refused_before_append(*code),
        _ => queued,
    };
    SendFailure {
        possibly_written,
        message: error.to_string(),
    }
}

/// Produce errors a partition leader answers before it appends anything: the batch is
/// not in any log. Every other code may come after the append (Kafka's
/// `NOT_LEADER_OR_FOLLOWER` and `REQUEST_TIMED_OUT` while waiting for acks=all,
/// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`, a storage error), so the record counts as possibly
/// written.
fn refused_before_append(code: ErrorCode) -> bool {
    use ErrorCode as E;
    matches!(
        code,
        E::CorruptMessage
            | E::UnknownTopicOrPartition
            | E::InvalidMessageSize
            | E::MessageTooLarge
            | E::InvalidTopic
            | E::RecordListTooLarge
            | E::NotEnoughReplicas
            | E::InvalidRequiredAcks
            | E::TopicAuthorizationFailed
            | E::ClusterAuthorizationFailed
            | E::TransactionalIdAuthorizationFailed
            | E::InvalidTimestamp
            | E::UnsupportedVersion
            | E::InvalidRequest
            | E::UnsupportedForMessageFormat
            | E::PolicyViolation
            | E::OutOfOrderSequenceNumber
            | E::InvalidProducerEpoch
            | E::InvalidProducerIdMapping
            | E::UnknownProducerId
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a caller may be told "nothing was written, try again" decides whether a retry
    /// can charge twice: only a definite refusal says so.
    #[test]
    fn only_a_definite_refusal_counts_as_not_written() {
        let written = |queued, error| failure(queued, error).possibly_written;
        // Never left this process.
        assert!(!written(false, KrafkaError::timeout("enqueue")));
        // Left it, and nothing definite came back: it may be in the log.
        assert!(written(true, KrafkaError::timeout("ack")));
        assert!(written(
            true,
            KrafkaError::network(std::io::Error::other("reset"))
        ));
        // The client knows, and says which.
        assert!(written(
            true,
            KrafkaError::delivery_timeout(true, "in flight")
        ));
        assert!(!written(
            true,
            KrafkaError::delivery_timeout(false, "never sent")
        ));
        // The broker refused the batch before appending it.
        assert!(!written(
            true,
            KrafkaError::broker(ErrorCode::NotEnoughReplicas, "isr")
        ));
        assert!(!written(
            true,
            KrafkaError::broker(ErrorCode::MessageTooLarge, "size")
        ));
        // Answered after the append may have happened: acks=all waiting on followers.
        for code in [
            ErrorCode::NotLeaderForPartition,
            ErrorCode::RequestTimedOut,
            ErrorCode::NotEnoughReplicasAfterAppend,
            ErrorCode::KafkaStorageException,
            ErrorCode::UnknownServerError,
        ] {
            assert!(
                written(true, KrafkaError::broker(code, "after")),
                "{code:?}"
            );
        }
        assert!(!written(
            true,
            KrafkaError::out_of_order_sequence("t", 0, "gap")
        ));
    }

    #[test]
    fn the_message_carries_the_clients_reason() {
        let failure = failure(true, KrafkaError::timeout("waiting for the ack"));
        assert!(
            failure.message.contains("waiting for the ack"),
            "{}",
            failure.message
        );
    }
}
