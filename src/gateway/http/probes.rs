//! `/healthz` (the process answers), `/readyz` (it takes payments now), `/metrics` (on the
//! payment port, or alone on `metrics_listen`).

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

#[cfg(test)]
mod tests {
    use super::super::test_gateway::gateway_with;
    use crate::config::Config;
    use crate::ops::http_server::answer;
    use tide::http::{Method, Request, Url};

    fn status_of(config: Config, path: &str) -> u16 {
        let (app, _queue) = gateway_with(config);
        let url = Url::parse("http://gw").unwrap().join(path).unwrap();
        async_std::task::block_on(answer(app, Request::new(Method::Get, url))).status() as u16
    }

    /// With a listener of its own, `/metrics` is no longer on the port the payment clients
    /// and their load balancer reach.
    #[test]
    fn metrics_leave_the_payment_port_when_metrics_listen_is_set() {
        assert_eq!(status_of(Config::default(), "/metrics"), 200);
        let apart = Config {
            metrics_listen: Some("127.0.0.1:9311".parse().unwrap()),
            ..Config::default()
        };
        assert_eq!(status_of(apart.clone(), "/metrics"), 404);
        assert_eq!(status_of(apart, "/healthz"), 200);
    }
}
