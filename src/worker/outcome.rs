//! The answer to an outcome lookup (`wire::outcome_lookup`): what became of the payment
//! with an idempotency key, read from the results store after reading its log to the end
//! (the payment is often another worker's). The PG is never called and no payment record
//! is written, so a lookup can be asked any number of times, from any host.

use crate::wire::reply_error::ReplyError;
use crate::wire::traceparent::TraceParent;
use crate::worker::Worker;
use crate::worker::answer::{Answer, Recorded};
use crate::worker::settle::answer_from;
use crate::worker::slot::Slot;

/// The payment's first answer when it is on record (as its caller got it), else
/// `payment-in-progress` or `no-such-payment`; `Err` when the store cannot be read, so the
/// lookup is read again.
pub async fn look_up(
    worker: &Worker,
    slot: &Slot,
    key: &str,
    trace: &TraceParent,
) -> Result<Answer, String> {
    // The store reads the log only when a payment needs it, so what it knows may be old:
    // another worker may have settled this payment since. Read its partition to its end
    // first.
    worker
        .results
        .catch_up(&[slot.partition])
        .await
        .map_err(|e| {
            format!("cannot read the results log to its end for a lookup of {key}: {e}")
        })?;
    let on_record = worker
        .results
        .lookup(slot)
        .await
        .map_err(|e| format!("cannot read the result of {key} for a lookup: {e}"))?;
    worker.metrics.request("lookup");
    log::info!(
        "lookup of {key}: {} traceparent={trace}",
        match &on_record {
            Some(Recorded::Final { .. }) => "settled",
            Some(Recorded::Retryable) => "failed without charging",
            Some(Recorded::Pending { .. }) => "in progress",
            None => "not on record",
        }
    );
    Ok(match on_record {
        Some(Recorded::Pending { started_ms, .. }) => Answer::failure(
            ReplyError::InProgress,
            "IN_PROGRESS",
            &format!(
                "an attempt of this payment started at {started_ms} (ms since the epoch) has not finished; ask again shortly, or repeat the payment with the same key to have it settled"
            ),
        ),
        Some(settled) => answer_from(&settled),
        None => Answer::failure(
            ReplyError::NeverSeen,
            "NOT_FOUND",
            "no payment with this idempotency key on this order within the idempotency window",
        ),
    })
}
