//! Problem details as tide responses, and a fallback that gives every error one.
//!
//! Handlers answer their own failures with a [`Problem`]. Whatever else ends in 4xx or
//! 5xx (an unknown route, a wrong method) passes through [`as_problem`], so a client never
//! has to parse an empty or plain-text error. It runs on every answer in
//! [`super::connection::answer`], not as tide middleware: a middleware's future would be one more
//! allocation held by every payment waiting for its reply.

use crate::wire::problem::{self, Problem};
use tide::http::mime::Mime;
use tide::{Response, StatusCode, http};

/// The response for `problem`.
pub fn respond(problem: &Problem) -> Response {
    let status = StatusCode::try_from(problem.status).unwrap_or(StatusCode::InternalServerError);
    let mut response = Response::new(status);
    response.set_body(problem.to_json());
    response.set_content_type(problem_mime());
    if let Some(seconds) = problem.retry_after {
        response.insert_header("retry-after", seconds.to_string());
    }
    if let Some(later) = &problem.later {
        // RFC 5989 `monitor`: the resources that will report this request's outcome.
        let mut links = format!("<{}>; rel=\"monitor\"", later.reply_url);
        if let Some(url) = &later.outcome_url {
            links.push_str(&format!(", <{url}>; rel=\"monitor\""));
        }
        response.insert_header("link", links);
    }
    response
}

fn problem_mime() -> Mime {
    problem::CONTENT_TYPE
        .parse()
        .unwrap_or(tide::http::mime::JSON)
}

/// Gives an error response with nothing to read a problem body. kreply's handlers never
/// fail (they answer with a problem), so what comes here is tide's own 404, and its 405 on
/// a server whose routes are not made with [`super::one_method::route`]. An
/// error a handler wrote a body for is its own (the PG simulator's JSON 402, which the
/// worker reads) and passes unchanged.
pub fn as_problem(response: http::Response) -> http::Response {
    let status = response.status();
    let error = status.is_client_error() || status.is_server_error();
    if !error || response.len() != Some(0) {
        return response;
    }
    let problem = match status {
        StatusCode::NotFound => Problem::new(
            404,
            "unknown-route",
            "no such endpoint; payments are POST /v1/payments/{operation}",
        ),
        StatusCode::MethodNotAllowed => Problem::new(
            405,
            "method-not-allowed",
            "this endpoint does not take that method",
        ),
        s if s.is_client_error() => Problem::new(s as u16, "bad-request", s.canonical_reason()),
        s => {
            log::error!("a handler answered {status} without a problem body");
            Problem::new(
                s as u16,
                "internal-error",
                "the gateway failed; see its log",
            )
        }
    };
    respond(&problem).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_error_becomes_a_problem_and_a_written_one_is_kept() {
        let unknown = as_problem(http::Response::new(StatusCode::NotFound));
        assert_eq!(unknown.status(), StatusCode::NotFound);
        assert_eq!(
            unknown.content_type().map(|m| m.essence().to_string()),
            Some(problem::CONTENT_TYPE.to_string())
        );
        let mut declined = http::Response::new(StatusCode::PaymentRequired);
        declined.set_body(serde_json::json!({"status": "DECLINED"}));
        let kept = as_problem(declined);
        assert_eq!(kept.content_type(), Some(tide::http::mime::JSON));
        assert_eq!(kept.len(), Some(r#"{"status":"DECLINED"}"#.len()));
    }
}
