//! An idempotent producer that starts a new session when the brokers stop honouring the
//! one it has.
//!
//! An idempotent producer writes under a producer id the brokers handed out. A broker
//! that restarts with its state lost (or a log that is truncated or re-created) no longer
//! knows that id: every send then fails with an unknown producer id or an out-of-order
//! sequence, and krafka answers by bumping the epoch of the *same* id, which the broker
//! does not know either, so the producer fails every send for good. tansu also fences an
//! id whose epoch moved, which krafka treats as fatal. Seen: a worker logging
//! `UnknownProducerId` for minutes, until it was restarted.
//!
//! The remedy is a new session: a new krafka producer, which asks the brokers for a new
//! producer id. The rules that keep it safe:
//! - the record whose send failed is never sent again. Its caller gets the failure, with
//!   what is known about whether it was written; only records sent later use the new
//!   session;
//! - the old session is closed with a short grace period, so a record still retrying
//!   in it gets a definite outcome (delivered, or failed as possibly written) instead
//!   of looping until its delivery timeout;
//! - one failure of a session renews it once, however many sends saw that failure.
//!
//! On tansu only, a send with no acknowledgement for a few seconds also renews the session
//! (the send itself keeps waiting for its own outcome): krafka re-sends a batch to a
//! partition it never wrote to under an id tansu forgot until its 30 s delivery timeout,
//! and reports nothing while it does. On Kafka a slow acknowledgement is normal and is
//! waited for ([`BrokerCompat::producer_stuck_after`]).

use crate::config::Config;
use crate::kafka::BrokerCompat;
use krafka::producer::{DeliveryHandle, Producer, RecordMetadata};
use krafka::{Kafka, KrafkaError, Record};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long records still in a replaced session may take to finish.
const OLD_SESSION_GRACE: Duration = Duration::from_secs(3);
/// krafka's default request timeout, which bounds a produce delivery from below.
const KRAFKA_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The producer settings, kept to build each new session the same way.
#[derive(Clone)]
struct Settings {
    linger: Duration,
    batch_bytes: usize,
    deliver_within: Duration,
    /// An acknowledgement outstanding this long renews the session; `None`: never.
    stuck_after: Option<Duration>,
}

/// One session: a producer and the number of the session it is.
#[derive(Clone)]
pub struct Session {
    pub number: u64,
    pub producer: Arc<Producer>,
}

/// The current session and how to start the next one.
pub struct ProducerSession {
    kafka: Kafka,
    settings: Settings,
    what: &'static str,
    renewed: Box<dyn Fn() + Send + Sync>,
    current: RwLock<Session>,
    renewing: tokio::sync::Mutex<()>,
}

impl ProducerSession {
    /// Starts the first session of the idempotent acks=all producer on `kafka`.
    ///
    /// `what` names the producer in log lines; `renewed` is called for each new session.
    /// Delivery is bounded by `deliver_within` (the longest a caller waits): a record whose
    /// caller has given up should fail rather than be written minutes later. krafka needs at
    /// least its request timeout (30 s) plus the linger, so that is the floor.
    pub async fn open(
        kafka: Kafka,
        config: &Config,
        deliver_within: Duration,
        what: &'static str,
        renewed: impl Fn() + Send + Sync + 'static,
    ) -> Result<Arc<ProducerSession>, KrafkaError> {
        let settings = Settings {
            linger: Duration::from_millis(config.producer_linger_ms),
            batch_bytes: config.producer_batch_bytes,
            deliver_within,
            stuck_after: BrokerCompat::producer_stuck_after(config.broker_compat),
        };
        let producer = build(&kafka, &settings).await?;
        Ok(Arc::new(ProducerSession {
            kafka,
            settings,
            what,
            renewed: Box::new(renewed),
            current: RwLock::new(Session {
                number: 1,
                producer: Arc::new(producer),
            }),
            renewing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The session new records go to.
    pub fn current(&self) -> Session {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Queues `record` in the current session; `Err` carries the session it failed in.
    ///
    /// A record refused because its session was closed by a renewal meanwhile is queued
    /// in the new one: a refused record never left this process, so that is no re-send.
    pub async fn enqueue(
        &self,
        record: Record,
    ) -> Result<(u64, DeliveryHandle), (u64, KrafkaError)> {
        let session = self.current();
        let refused = match session.producer.enqueue(record.clone()).await {
            Ok(delivery) => return Ok((session.number, delivery)),
            Err(e) => e,
        };
        let now = self.current();
        if !matches!(refused, KrafkaError::Closed { .. }) || now.number == session.number {
            return Err((session.number, refused));
        }
        match now.producer.enqueue(record).await {
            Ok(delivery) => Ok((now.number, delivery)),
            Err(e) => Err((now.number, e)),
        }
    }

    /// Waits for `delivery`, renewing session `number` if it stalls or fails for a reason
    /// that lies with the session. The outcome is the record's own; it is never re-sent.
    pub async fn outcome(
        self: &Arc<Self>,
        number: u64,
        delivery: DeliveryHandle,
    ) -> Result<RecordMetadata, KrafkaError> {
        tokio::pin!(delivery);
        let result = match self.settings.stuck_after {
            None => delivery.await,
            Some(stuck_after) => match tokio::time::timeout(stuck_after, &mut delivery).await {
                Ok(result) => result,
                Err(_) => {
                    let why = format!(
                        "has had an acknowledgement outstanding for {} s (tansu-0.6)",
                        stuck_after.as_secs()
                    );
                    self.renew_in_background(number, &why);
                    delivery.await
                }
            },
        };
        if let Err(e) = &result {
            self.renew_after(number, e);
        }
        result
    }

    /// Sends `record` and waits for its acknowledgement.
    pub async fn send(self: &Arc<Self>, record: Record) -> Result<RecordMetadata, KrafkaError> {
        match self.enqueue(record).await {
            Ok((number, delivery)) => self.outcome(number, delivery).await,
            Err((number, e)) => {
                self.renew_after(number, &e);
                Err(e)
            }
        }
    }

    /// Starts a new session if `error`, seen in session `number`, lies with the session.
    pub fn renew_after(self: &Arc<Self>, number: u64, error: &KrafkaError) {
        if breaks_session(error) {
            self.renew_in_background(number, &format!("failed: {error}"));
        }
    }

    /// Starts a new session unless session `number` was already replaced or is being
    /// replaced; returns at once.
    pub fn renew_in_background(self: &Arc<Self>, number: u64, why: &str) {
        let this = Arc::clone(self);
        let why = why.to_string();
        tokio::spawn(async move { this.renew(number, &why).await });
    }

    /// Sends everything queued so far in the current session.
    pub async fn flush(&self) -> Result<(), KrafkaError> {
        self.current().producer.flush().await
    }

    /// Closes the current session, sending what is queued.
    pub async fn close(&self) -> Result<(), KrafkaError> {
        self.current().producer.close().await
    }

    async fn renew(&self, number: u64, why: &str) {
        let Ok(_renewing) = self.renewing.try_lock() else {
            return; // a renewal is under way; it covers this failure too
        };
        if self.current().number != number {
            return;
        }
        log::warn!(
            "{}: starting a new producer session: session {number} {why}; records already sent in it keep their own outcome and are never sent again",
            self.what
        );
        let producer = match build(&self.kafka, &self.settings).await {
            Ok(producer) => Arc::new(producer),
            Err(e) => {
                log::warn!(
                    "{}: cannot start a new producer session yet (the next failure tries again): {e}",
                    self.what
                );
                return;
            }
        };
        let old = {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let next = Session {
                number: number + 1,
                producer,
            };
            std::mem::replace(&mut *current, next)
        };
        (self.renewed)();
        log::warn!(
            "{}: producer session {} started; records from now on are sent in it",
            self.what,
            number + 1
        );
        close_in_background(old.producer);
    }
}

/// Whether `error` says the session itself is broken, rather than the record or the
/// brokers' reachability: the brokers no longer know or accept this producer id, or a
/// record timed out (possibly in a re-send loop under an id the brokers do not know).
fn breaks_session(error: &KrafkaError) -> bool {
    use krafka::error::ErrorCode as E;
    match error {
        KrafkaError::OutOfOrderSequence { .. }
        | KrafkaError::Fenced { .. }
        | KrafkaError::DeliveryTimeout { .. }
        | KrafkaError::IllegalState { .. } => true,
        KrafkaError::Broker { code, .. } => matches!(
            code,
            E::UnknownProducerId
                | E::InvalidProducerEpoch
                | E::ProducerFenced
                | E::InvalidProducerIdMapping
                | E::OutOfOrderSequenceNumber
        ),
        _ => false,
    }
}

async fn build(kafka: &Kafka, settings: &Settings) -> Result<Producer, KrafkaError> {
    kafka
        .producer()
        .acks(krafka::producer::Acks::All)
        .idempotent(true)
        .linger(settings.linger)
        .batch_size(settings.batch_bytes)
        .max_block(settings.deliver_within)
        .delivery_timeout(
            settings
                .deliver_within
                .max(KRAFKA_REQUEST_TIMEOUT + settings.linger),
        )
        .build()
        .await
}

/// Lets the records still in a replaced session finish within the grace period, then
/// fails the rest (as possibly written: they may have reached a broker).
fn close_in_background(producer: Arc<Producer>) {
    tokio::spawn(async move {
        let options = krafka::CloseOptions::new().timeout(OLD_SESSION_GRACE);
        if let Err(e) = producer.close_with(options).await {
            log::warn!("closing a replaced producer session: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use krafka::error::ErrorCode;

    #[test]
    fn a_lost_or_fenced_producer_id_or_a_timeout_breaks_the_session() {
        let broker = |code| KrafkaError::broker(code, "x");
        assert!(breaks_session(&broker(ErrorCode::UnknownProducerId)));
        assert!(breaks_session(&broker(ErrorCode::ProducerFenced)));
        assert!(breaks_session(&KrafkaError::fenced("x")));
        assert!(breaks_session(&KrafkaError::DeliveryTimeout {
            possibly_written: true,
            message: "x".into()
        }));
    }

    #[test]
    fn a_bad_record_or_a_missing_topic_does_not() {
        assert!(!breaks_session(&KrafkaError::broker(
            ErrorCode::MessageTooLarge,
            "x"
        )));
        assert!(!breaks_session(&KrafkaError::UnknownTopic {
            topic: "t".into()
        }));
        assert!(!breaks_session(&KrafkaError::closed("x")));
    }
}
