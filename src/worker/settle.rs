//! Settling one request: answer a repeat from the record, or charge once and record it.
//!
//! An attempt calls the PG only after its `pending` is in the log with nothing unfinished
//! before it ([`race`]); an attempt behind an unfinished one, and a repeat that finds one,
//! wait (bounded) for its final record instead, so "never charge twice" does not depend on
//! the consumer group giving a partition to one worker at a time.
//!
//! Every log line names the request's `traceparent`, and the PG call carries a child of
//! it, so one trace id finds the payment from the caller to the PG.

use crate::config::Claim;
use crate::wire::payment::PaymentRequest;
use crate::wire::record::now_ms;
use crate::wire::reply_error::ReplyError;
use crate::wire::traceparent::TraceParent;
use crate::worker::Worker;
use crate::worker::answer::{Answer, Recorded};
use crate::worker::fingerprint;
use crate::worker::outcome;
use crate::worker::pg_client::PgAnswer;
use crate::worker::race::{self, Race};
use crate::worker::request::WorkItem;
use crate::worker::slot::Slot;
use std::time::Instant;

/// Settles `item`, a request written at `written_ms`, and sends its reply; `Err` when the
/// reply was not acknowledged, so the request must be read again (the record then answers
/// the repeat).
pub async fn settle_and_reply(
    worker: &Worker,
    item: WorkItem,
    partition: i32,
    written_ms: i64,
) -> Result<(), String> {
    let answer = match (&item.lookup, &item.payment) {
        (Some(key), _) => {
            let order_id = String::from_utf8_lossy(&item.key);
            let slot = Slot::of(partition, &order_id, key);
            outcome::look_up(worker, &slot, key, &item.trace).await?
        }
        (None, Err(why)) => {
            worker.metrics.request("invalid-request");
            Answer::invalid(why)
        }
        // Its key may be forgotten already: charging it could charge twice.
        (None, Ok(_)) if worker.results.past_window(written_ms) => {
            worker.metrics.request("expired");
            Answer::invalid("the request is older than the idempotency window; it was not charged")
        }
        (None, Ok(payment)) => settle(worker, payment, partition, &item.trace).await?,
    };
    let reply = answer.to_reply(&item, &worker.names);
    worker
        .send(reply)
        .await
        .map_err(|e| format!("reply to {} not acknowledged: {e}", item.reply_to.topic))
}

/// One payment being settled: the request, its idempotency key, where its records live
/// (`slot`), the fingerprint that binds the key to this request (`fingerprint`), and its
/// trace.
struct Settling<'a> {
    payment: &'a PaymentRequest,
    key: &'a str,
    slot: Slot,
    fingerprint: String,
    trace: &'a TraceParent,
}

impl<'a> Settling<'a> {
    fn of(payment: &'a PaymentRequest, partition: i32, trace: &'a TraceParent) -> Settling<'a> {
        let key = payment.idempotency_key.as_deref().unwrap_or_default();
        Settling {
            payment,
            key,
            slot: Slot::of(partition, &payment.order_id, key),
            fingerprint: fingerprint::of(payment),
            trace,
        }
    }
}

/// The answer for `payment`, calling the PG only if no attempt is on record.
async fn settle(
    worker: &Worker,
    payment: &PaymentRequest,
    partition: i32,
    trace: &TraceParent,
) -> Result<Answer, String> {
    let this = Settling::of(payment, partition, trace);
    let key = this.key;
    let on_record = worker
        .results
        .lookup(&this.slot)
        .await
        .map_err(|e| format!("cannot read the result of {key}, PG not called: {e}"))?;
    if on_record
        .as_ref()
        .is_some_and(|r| r.bound_elsewhere(&this.fingerprint))
    {
        return Ok(refuse_reused(worker, &this));
    }
    if matches!(
        on_record,
        Some(Recorded::Final { .. } | Recorded::Pending { .. })
    ) {
        worker.metrics.request("repeat");
    }
    match on_record {
        Some(settled @ Recorded::Final { .. }) => {
            log::info!(
                "repeat of {key}: answered from the record, PG not called traceparent={trace}"
            );
            return Ok(answer_from(&settled));
        }
        Some(Recorded::Pending { started_ms, .. }) => {
            log::info!(
                "repeat of {key}: an earlier attempt has not finished; PG not called, waiting for its record traceparent={trace}"
            );
            return Ok(await_earlier(worker, &this, started_ms).await);
        }
        Some(Recorded::Retryable) | None => {}
    }
    // With `claim: "pg"` overlapping attempts all call the PG, which answers them alike.
    if worker.claim == Claim::Log
        && let Some(answer) = claim(worker, &this).await?
    {
        return Ok(answer);
    }
    Ok(charge_and_record(worker, &this).await)
}

/// Calls the PG for the payment and puts what it said on record: the final answer, or
/// `retryable` when it charged nothing; an unknown outcome leaves the `pending` standing.
async fn charge_and_record(worker: &Worker, this: &Settling<'_>) -> Answer {
    let (payment, key, trace) = (this.payment, this.key, this.trace);
    // Only the PG call is bounded by `worker.concurrency`: the Kafka work around it (the
    // claim, the records) waits on the brokers, and bounding it too capped throughput at
    // concurrency / (time per payment), whatever the PG could take.
    let permit = worker.pg_calls.acquire().await;
    let started = Instant::now();
    let pg_answer = {
        let _calling = worker.metrics.pg_calls_in_flight.track();
        worker.pg.charge(payment, &trace.child()).await
    };
    drop(permit);
    let (answer, recorded) = match pg_answer {
        PgAnswer::Approved(body) => with_final(Answer { error: None, body }),
        PgAnswer::Declined(body) => with_final(Answer {
            error: Some(ReplyError::Declined),
            body,
        }),
        // Without a claim, an overlapping attempt may have written the final record
        // already: a failure of this one must not follow it.
        PgAnswer::Failed(why) => (
            Answer::failure(ReplyError::PgError, "FAILED", &why),
            (worker.claim == Claim::Log).then_some(Recorded::Retryable),
        ),
        // Stays pending: the charge may have happened.
        PgAnswer::Unknown(why) => (Answer::in_doubt(&why), None),
    };
    if let Some(recorded) = recorded.map(|r| r.bound_to(&this.fingerprint))
        && let Err(e) = worker.results.put(&this.slot, &recorded).await
    {
        // The caller still gets the real answer; a repeat settles it again (or, with a PG
        // that does not de-duplicate, is answered "unknown").
        log::error!(
            "cannot record the result for {key} (it stays pending): {e} traceparent={trace}"
        );
    }
    let result = answer.error.map_or("approved", ReplyError::code);
    worker.metrics.request(result);
    worker.metrics.pg_call(result, started.elapsed());
    log::info!(
        "payment {key} order_id={} operation={} result={result} traceparent={trace}",
        payment.order_id,
        payment.operation,
    );
    answer
}

/// Puts this attempt's `pending` on record before the call (if this worker dies
/// mid-call, a repeat knows) and reads the log back to it: `None` when it is first, so
/// the PG may be called; else the answer of the earlier attempt it lost to.
async fn claim(worker: &Worker, this: &Settling<'_>) -> Result<Option<Answer>, String> {
    let (key, trace) = (this.key, this.trace);
    let attempt = uuid::Uuid::new_v4().to_string();
    let pending = Recorded::Pending {
        attempt: attempt.clone(),
        started_ms: now_ms(),
        fingerprint: this.fingerprint.clone(),
    };
    let claiming = Instant::now();
    let before = worker
        .results
        .claim(&this.slot, &pending, &attempt)
        .await
        .map_err(|e| format!("cannot record the attempt for {key}, PG not called: {e}"))?;
    log::debug!(
        "{key}: pending recorded and read back in {} ms traceparent={trace}",
        claiming.elapsed().as_millis()
    );
    let race = race::decide(before.as_ref(), &attempt);
    if race != Race::Won {
        worker.metrics.lost_races.inc();
    }
    if let Some(earlier) = before.filter(|r| r.bound_elsewhere(&this.fingerprint)) {
        // The key's newest record must be the other request's again, or its own
        // repeats would find ours and be refused.
        if let Err(e) = worker.results.put(&this.slot, &earlier).await {
            log::error!(
                "cannot record {key}'s earlier record again after ours: {e} traceparent={trace}"
            );
        }
        return Ok(Some(refuse_reused(worker, this)));
    }
    match race {
        Race::Won => Ok(None),
        Race::Settled(settled) => {
            log::warn!(
                "lost the race for {key}: an earlier attempt finished first; PG not called, answered from its record traceparent={trace}"
            );
            // Ours is now the newest record of the key: the final one must be again, or a
            // compacted topic would keep only our unfinished `pending`.
            if let Err(e) = worker.results.put(&this.slot, &settled).await {
                log::error!(
                    "cannot record the result for {key} again after ours: {e} traceparent={trace}"
                );
            }
            Ok(Some(answer_from(&settled)))
        }
        Race::Running { started_ms } => {
            log::warn!(
                "lost the race for {key}: an earlier attempt is still running; PG not called, waiting for its record traceparent={trace}"
            );
            Ok(Some(await_earlier(worker, this, started_ms).await))
        }
    }
}

/// The answer of an earlier, unfinished attempt started at `started_ms`: its record once
/// written. When none comes while it could still be running, the attempt is over and left
/// the payment in doubt: a PG that de-duplicates by key is asked again with the same key
/// (it answers what it did the first time, or charges now if it never got the call);
/// otherwise the answer is `pg-unknown`.
async fn await_earlier(worker: &Worker, this: &Settling<'_>, started_ms: i64) -> Answer {
    let (key, trace) = (this.key, this.trace);
    let wait = race::wait_left(started_ms, now_ms(), worker.attempt_limit);
    let why = match worker.results.wait_settled(&this.slot, wait).await {
        Ok(Some(settled)) if settled.bound_elsewhere(&this.fingerprint) => {
            return refuse_reused(worker, this);
        }
        Ok(Some(settled)) => {
            log::info!(
                "{key}: answered from the earlier attempt's record, PG not called traceparent={trace}"
            );
            return answer_from(&settled);
        }
        outcome => outcome.err().map(|e| format!(" ({e})")).unwrap_or_default(),
    };
    if worker.pg_idempotent {
        log::warn!(
            "{key}: an earlier attempt never finished{why}; asking the PG again with the same idempotency key traceparent={trace}"
        );
        worker.metrics.asked_pg_again.inc();
        return charge_and_record(worker, this).await;
    }
    log::warn!(
        "{key}: an earlier attempt never finished{why}; answering unknown, PG not called (worker.pg_idempotent is false) traceparent={trace}"
    );
    Answer::in_doubt(
        "an earlier attempt of this payment was interrupted during the PG call; check with the PG before retrying",
    )
}

/// The answer to a request whose idempotency key another request used first.
fn refuse_reused(worker: &Worker, this: &Settling<'_>) -> Answer {
    log::warn!(
        "{}: the idempotency key was first used for another request; refused, PG not called traceparent={}",
        this.key,
        this.trace
    );
    worker.metrics.request("idempotency-key-reused");
    Answer::key_reused()
}

/// The answer a settled (final or retryable) record gives.
pub(super) fn answer_from(settled: &Recorded) -> Answer {
    match settled {
        Recorded::Final { error, reply, .. } => Answer::from_final(error.as_deref(), reply),
        _ => Answer::failure(
            ReplyError::PgError,
            "FAILED",
            "an earlier attempt of this payment failed without charging; it may be retried",
        ),
    }
}

fn with_final(answer: Answer) -> (Answer, Option<Recorded>) {
    let recorded = answer.to_final();
    (answer, Some(recorded))
}
