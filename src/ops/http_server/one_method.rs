//! A route that takes one method and answers every other with `405 method-not-allowed`
//! naming it in `Allow`.
//!
//! RFC 9110 section 15.5.6: a 405 MUST carry `Allow`, the methods the resource takes, so a
//! client can correct itself. tide's router answers 405 without one (it knows a path takes
//! other methods, but not which), so each route answers the other methods itself.
//!
//! A `GET` route answers `HEAD` too, with the same handler: tide does that by itself only
//! while nothing else answers the path, which the catch-all here would, so `HEAD` is
//! registered explicitly and `Allow` names it.

use super::problem_response;
use crate::wire::problem::Problem;
use tide::http::Method;
use tide::{Endpoint, Response, Server};

/// Serves `endpoint` for `method` (and `HEAD` with a `GET`) at `path`, and `405` with
/// `Allow` for every other method there.
pub fn route<S, E>(app: &mut Server<S>, path: &str, method: Method, endpoint: E)
where
    S: Clone + Send + Sync + 'static,
    E: Endpoint<S> + Clone,
{
    let mut route = app.at(path);
    route.method(method, endpoint.clone());
    let allow = if method == Method::Get {
        route.method(Method::Head, endpoint);
        "GET, HEAD".to_string()
    } else {
        method.to_string()
    };
    route.all(move |_| {
        let allow = allow.clone();
        async move { Ok(method_not_allowed(&allow)) }
    });
}

/// `405 method-not-allowed`, with `Allow: allow`.
fn method_not_allowed(allow: &str) -> Response {
    let problem = Problem::new(
        405,
        "method-not-allowed",
        format!("this endpoint takes {allow} only (see the Allow header)"),
    );
    let mut response = problem_response::respond(&problem);
    response.insert_header("allow", allow);
    response
}
