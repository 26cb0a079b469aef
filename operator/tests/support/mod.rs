//! Test support shared by the integration tests: a scripted mock of the
//! Kubernetes API server (tower-test), fake coordinators (tonic) and one
//! reconcile pass scripted against them ([`scenario`]).
#![allow(dead_code)]

pub mod meta;
pub mod scenario;

use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// The mock's handle: requests the client sent, waiting for a response.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose every request goes to the returned handle.
pub fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// One request as the API server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Query string ("" when none).
    pub query: String,
    /// Body as JSON (`Null` when empty).
    pub body: Value,
}

/// Builds the response to a request: status code and JSON body.
pub type Reply = Box<dyn Fn(&Seen) -> (u16, Value) + Send>;

/// One expected request and the answer to give.
pub struct Step {
    method: Method,
    path: String,
    reply: Reply,
}

/// Expects `method path` (a path ending in `*`: any path with that prefix)
/// and answers with `reply`.
pub fn step(method: Method, path: impl Into<String>, reply: Reply) -> Step {
    Step {
        method,
        path: path.into(),
        reply,
    }
}

/// Answers with the request body (what server-side apply returns, roughly).
pub fn echo() -> Reply {
    Box::new(|seen| (200, seen.body.clone()))
}

/// Answers with the request body after `edit` (e.g. adds a status).
pub fn echo_with(edit: impl Fn(&mut Value) + Send + 'static) -> Reply {
    Box::new(move |seen| {
        let mut body = seen.body.clone();
        edit(&mut body);
        (200, body)
    })
}

/// Answers with a fixed JSON body.
pub fn json_reply(code: u16, body: Value) -> Reply {
    Box::new(move |_| (code, body.clone()))
}

/// A Kubernetes `Status` failure.
pub fn status_failure(code: u16, reason: &str) -> Reply {
    json_reply(
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": format!("mock: {reason}"),
            "reason": reason, "code": code
        }),
    )
}

/// An empty list of a kind.
pub fn empty_list(api_version: &str, kind: &str) -> Reply {
    list(api_version, kind, Vec::new())
}

/// A list of a kind.
pub fn list(api_version: &str, kind: &str, items: Vec<Value>) -> Reply {
    json_reply(
        200,
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

/// Serves `steps` in order, asserting each request's method and path, and
/// returns what was seen, with the handle: kept open, so that a request
/// beyond the script waits for an answer that never comes and the caller's
/// timeout fails the test. Panics on an unexpected request or when the
/// client stops before every step was served.
pub async fn serve(mut handle: Handle, steps: Vec<Step>) -> (Vec<Seen>, Handle) {
    let mut seen_all = Vec::new();
    for (index, expected) in steps.into_iter().enumerate() {
        let (request, send) = handle.next_request().await.unwrap_or_else(|| {
            panic!(
                "step {index}: expected {} {} but the client sent nothing more",
                expected.method, expected.path
            )
        });
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.expect("request body").to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        let seen = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body,
        };
        let path = match expected.path.strip_suffix('*') {
            Some(prefix) if seen.path.starts_with(prefix) => seen.path.as_str(),
            _ => expected.path.as_str(),
        };
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&expected.method, path),
            "step {index}: unexpected request (query {:?})",
            seen.query
        );
        let (code, reply) = (expected.reply)(&seen);
        let response = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).expect("reply JSON")))
            .expect("response");
        send.send_response(response);
        seen_all.push(seen);
    }
    (seen_all, handle)
}

/// Bound on any one scenario, so a missing or extra request fails the test
/// instead of hanging it.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(20);
