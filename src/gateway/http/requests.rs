//! `GET /v1/requests/{correlation_id}`: the outcome of a payment whose caller was told
//! "unknown" (504 `reply-timeout`, or 503 `send-failed` with `outcome: unknown`).
//!
//! Only the host that sent the request reads its reply, so only that host can answer.
//! The 504 names it: `reply_url` is `/v1/requests/{id}?host=<suffix>`, the suffix from the
//! host table. A load balancer may send the lookup to any host; a host that is not the
//! owner answers `307` to the owner's public base URL from the same table (its `url=`
//! field), else to its IP on this gateway's own port (every gateway of a deployment listens
//! on the same port). The owner answers from its
//! late-reply store:
//!
//! - the reply came: the same answer the payment call would have had (200 with the value,
//!   or the `kreply_error` problem: 402, 422, 502, 504), with the reply's `traceparent`
//!   (the worker echoes the request's, so the trace the call's answer named);
//! - not yet: 404 `reply-pending`, `outcome: unknown`, with `Retry-After`; 404 rather
//!   than 2xx so a client that only trusts 200 can never mistake it for an answer;
//! - never given up on here, or forgotten: 404 `unknown-request`.

use super::State;
use super::payments::{never_stored, respond, worker_answer};
use crate::gateway::http::GatewayState;
use crate::gateway::late_replies::LateLookup;
use crate::gateway::registry::Reply;
use crate::ops::http_server::problem_response;
use crate::wire::correlation_id::CorrelationId;
use crate::wire::dialect::Dialect;
use crate::wire::problem::{Outcome, Problem};
use crate::wire::traceparent::{self, TraceParent};
use std::net::SocketAddr;
use tide::{Request, Response, StatusCode};
use uuid::Uuid;

/// The query parameter naming the host (suffix) that owns the request.
const HOST_QUERY: &str = "host";
/// Seconds a caller is asked to wait before asking again about a pending request.
const PENDING_RETRY_AFTER_S: u16 = 1;

/// Where the outcome of request `id`, sent by host `suffix`, can be fetched.
pub fn reply_url(id: &CorrelationId, suffix: &str) -> String {
    format!("/v1/requests/{id}?{HOST_QUERY}={suffix}")
}

pub async fn handle(req: Request<State>) -> tide::Result {
    let gateway = req.state();
    let host = req
        .url()
        .query_pairs()
        .find(|(k, _)| k == HOST_QUERY)
        .map(|(_, v)| v.into_owned());
    let id_text = req.param("correlation_id").unwrap_or_default();
    let mut response = match find(gateway, id_text, host.as_deref()) {
        Ok(Found::Here(answer, id, trace)) => {
            let mut response = respond(answer, Some(&id));
            if let Some(trace) = trace {
                response.insert_header(traceparent::HEADER, trace.to_string());
            }
            response
        }
        Ok(Found::Elsewhere(location)) => {
            let mut response = Response::new(StatusCode::TemporaryRedirect);
            response.insert_header("location", location);
            response
        }
        Err(problem) => problem_response::respond(&problem),
    };
    never_stored(&mut response);
    Ok(response)
}

enum Found {
    /// This host's answer: the worker's reply value or its problem, and the reply's trace.
    Here(Result<Vec<u8>, Problem>, CorrelationId, Option<TraceParent>),
    /// Another host owns the request: the URL to ask there.
    Elsewhere(String),
}

fn find(gateway: &GatewayState, id_text: &str, host: Option<&str>) -> Result<Found, Problem> {
    let uuid = Uuid::parse_str(id_text).map_err(|_| {
        Problem::new(
            400,
            "invalid-correlation-id",
            format!("\"{id_text}\" is not a correlation id (a UUID, as in x-correlation-id)"),
        )
    })?;
    let own = &gateway.route.suffix;
    if let Some(owner) = host.filter(|h| h != own) {
        // Any dialect's id shows as the UUID, which is all the URL needs.
        let id = Dialect::default().correlation_id(uuid);
        return owner_url(gateway, &id, owner).map(Found::Elsewhere);
    }
    let (id, dialect, lookup) = late_lookup(gateway, uuid);
    match lookup {
        LateLookup::Answered(reply) => {
            let trace = trace_of(&reply);
            Ok(Found::Here(
                worker_answer(reply, Some(&id), dialect),
                id,
                trace,
            ))
        }
        LateLookup::Awaited => Err(Problem::new(
            404,
            "reply-pending",
            "no reply from the worker yet; the outcome is still unknown, ask again later",
        )
        .with_correlation_id(&id)
        .with_outcome(Outcome::Unknown)
        .with_retry_after(PENDING_RETRY_AFTER_S)),
        LateLookup::Unknown => Err(Problem::new(
            404,
            "unknown-request",
            format!(
                "host {own} holds no outcome for this id: it was answered in time, was sent through another host (use the reply_url of its 504, which names the host), or was forgotten after \"late_replies.max_age_ms\""
            ),
        )
        .with_correlation_id(&id)),
    }
}

/// The reply's trace context: the worker echoes the request's `traceparent`, so it names
/// the trace the payment call answered with. `None` when the worker sent none valid.
fn trace_of(reply: &Reply) -> Option<TraceParent> {
    reply
        .headers
        .iter()
        .find(|(name, _)| name == traceparent::HEADER)
        .and_then(|(_, value)| value.as_deref())
        .and_then(TraceParent::parse)
}

/// What this host holds for `uuid`, under the id of the dialect that sent it: a gateway
/// whose flows speak both has two ids for one UUID, of which only one was ever sent.
fn late_lookup(gateway: &GatewayState, uuid: Uuid) -> (CorrelationId, Dialect, LateLookup) {
    let mut first = None;
    for dialect in gateway.flows.dialects() {
        let id = dialect.correlation_id(uuid);
        match gateway.registry.late_reply(id.as_bytes()) {
            LateLookup::Unknown => {
                first.get_or_insert((id, dialect));
            }
            found => return (id, dialect, found),
        }
    }
    let (id, dialect) = first.unwrap_or((Dialect::Spring.correlation_id(uuid), Dialect::Spring));
    (id, dialect, LateLookup::Unknown)
}

/// The same lookup on the host the table lists for `suffix`, on this gateway's port.
fn owner_url(gateway: &GatewayState, id: &CorrelationId, suffix: &str) -> Result<String, Problem> {
    let owner = gateway.hosts.lookup_suffix(suffix).ok_or_else(|| {
        Problem::new(
            404,
            "unknown-host",
            format!("host \"{suffix}\" is not in this gateway's host table"),
        )
        .with_correlation_id(id)
    })?;
    let base = match &owner.public_url {
        Some(url) => url.clone(),
        None => format!(
            "http://{}",
            SocketAddr::new(owner.ip, gateway.config.listen.port())
        ),
    };
    Ok(format!("{base}{}", reply_url(id, suffix)))
}
