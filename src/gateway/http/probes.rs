//! `/healthz` (the process answers), `/readyz` (it takes payments now), `/metrics`.

use super::State;
use crate::wire::problem::Problem;
use tide::{Request, Response, StatusCode};

pub async fn healthz(_req: Request<State>) -> tide::Result {
    Ok(json(
        StatusCode::Ok,
        serde_json::json!({ "status": "alive" }),
    ))
}

pub async fn readyz(req: Request<State>) -> tide::Result {
    let gateway = req.state();
    if !gateway.readiness.is_ready() {
        let problem = Problem::new(
            503,
            "not-ready",
            "the reply consumer is not reading replies; see the gateway log",
        );
        return Ok(crate::ops::http_server::problem_response::respond(&problem));
    }
    let mut body = serde_json::json!({
        "status": "ready",
        "reply_topic": gateway.route.topic,
        "in_flight": gateway.registry.in_flight(),
    });
    if let Some(partition) = gateway.route.partition {
        body["reply_partition"] = partition.into();
    }
    Ok(json(StatusCode::Ok, body))
}

/// Prometheus text format 0.0.4.
pub async fn metrics(req: Request<State>) -> tide::Result {
    let gateway = req.state();
    let text = gateway
        .metrics
        .render(&gateway.registry, gateway.readiness.is_ready());
    let mut response = Response::new(StatusCode::Ok);
    response.set_body(text);
    response.insert_header("content-type", "text/plain; version=0.0.4; charset=utf-8");
    Ok(response)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = Response::new(status);
    response.set_body(body);
    response
}
