//! The response body type of the API port and the one helper that builds a
//! plain response; a leaf module shared by the routing ([`super::http`]) and
//! the web pages ([`super::web`]) so neither imports the other back.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

pub type Body = Full<Bytes>;

/// A plain response with a status and a content type.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
