//! Settling one request: answer a repeat from the record, or charge once and record it.

use crate::payment::PaymentRequest;
use crate::reply_error::ReplyError;
use crate::worker::Worker;
use crate::worker::answer::{Answer, Recorded};
use crate::worker::pg_client::PgAnswer;
use crate::worker::request::WorkItem;
use std::time::Instant;

/// Settles `item` and sends its reply; `Err` when the reply was not acknowledged, so the
/// request must be read again (the record then answers the repeat).
pub async fn settle_and_reply(worker: &Worker, item: WorkItem) -> Result<(), String> {
    let answer = match &item.payment {
        Err(why) => {
            worker.metrics.request("invalid-request");
            Answer::invalid(why)
        }
        Ok(payment) => settle(worker, payment).await?,
    };
    let reply = answer.to_reply(&item.reply_to, &item.key);
    worker
        .send(reply)
        .await
        .map_err(|e| format!("reply to {} not acknowledged: {e}", item.reply_to.topic))
}

/// The answer for `payment`, calling the PG only if no attempt is on record.
async fn settle(worker: &Worker, payment: &PaymentRequest) -> Result<Answer, String> {
    let key = payment.idempotency_key.as_deref().unwrap_or_default();
    let on_record = worker.results.get(key);
    if matches!(on_record, Some(Recorded::Final { .. } | Recorded::Pending)) {
        worker.metrics.request("repeat");
    }
    match on_record {
        Some(Recorded::Final { error, reply }) => {
            log::info!("repeat of {key}: answered from the record, PG not called");
            return Ok(Answer::from_final(error.as_deref(), &reply));
        }
        Some(Recorded::Pending) => {
            log::warn!(
                "repeat of {key}: an earlier attempt never finished; answering unknown, PG not called"
            );
            return Ok(Answer::in_doubt(
                "an earlier attempt of this payment was interrupted during the PG call; check with the PG before retrying",
            ));
        }
        Some(Recorded::Retryable) | None => {}
    }
    // On record before the call: if this worker dies mid-call, the repeat knows.
    worker
        .results
        .put(key, &Recorded::Pending)
        .await
        .map_err(|e| format!("cannot record the attempt for {key}, PG not called: {e}"))?;
    let started = Instant::now();
    let pg_answer = {
        let _calling = worker.metrics.pg_calls_in_flight.track();
        worker.pg.charge(payment).await
    };
    let (answer, recorded) = match pg_answer {
        PgAnswer::Approved(body) => with_final(Answer { error: None, body }),
        PgAnswer::Declined(body) => with_final(Answer {
            error: Some(ReplyError::Declined),
            body,
        }),
        PgAnswer::Failed(why) => (
            Answer::failure(ReplyError::PgError, "FAILED", &why),
            Some(Recorded::Retryable),
        ),
        // Stays pending: the charge may have happened.
        PgAnswer::Unknown(why) => (Answer::in_doubt(&why), None),
    };
    if let Some(recorded) = recorded
        && let Err(e) = worker.results.put(key, &recorded).await
    {
        // The caller still gets the real answer; a repeat will be answered "unknown".
        log::error!("cannot record the result for {key} (it stays pending): {e}");
    }
    let result = answer.error.map_or("approved", ReplyError::code);
    worker.metrics.request(result);
    worker.metrics.pg_call(result, started.elapsed());
    log::info!(
        "payment {key} order_id={} operation={} result={result}",
        payment.order_id,
        payment.operation,
    );
    Ok(answer)
}

fn with_final(answer: Answer) -> (Answer, Option<Recorded>) {
    let recorded = answer.to_final();
    (answer, Some(recorded))
}
