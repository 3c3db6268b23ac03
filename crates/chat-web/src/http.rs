//! Response building and request reading shared by the API and the pages.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, RETRY_AFTER,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};

/// Every response body: whole (JSON, pages, assets) or streamed (live updates).
pub type WebBody = BoxBody<Bytes, Infallible>;

/// The header carrying the epoch an answer reflects, and a client's newest seen epoch.
pub(crate) const CHAT_EPOCH: HeaderName = HeaderName::from_static("chat-epoch");

/// The header a script sends the CSRF secret in.
pub(crate) const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// The header that makes a `POST` safe to retry.
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The page's policy: our own script and style only, no inline script, never in a frame.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A body of bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> WebBody {
    Full::new(bytes.into()).boxed()
}

/// No body.
pub(crate) fn empty() -> WebBody {
    Empty::new().boxed()
}

/// A JSON answer.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<WebBody> {
    let bytes = serde_json::to_vec(value).expect("answers always serialise");
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An answer with a status and no body.
pub(crate) fn status_only(status: StatusCode) -> Response<WebBody> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

/// Marks `response` as reflecting `epoch`.
pub(crate) fn with_epoch(mut response: Response<WebBody>, epoch: u64) -> Response<WebBody> {
    response
        .headers_mut()
        .insert(CHAT_EPOCH, HeaderValue::from(epoch));
    response
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

/// `{"error": {"code", "message"}}` with the code's status and, for 429/503, `Retry-After`.
pub(crate) fn error_json(error: &ApiError) -> Response<WebBody> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: error.code.as_str(),
            message: &error.message,
        },
    };
    let mut response = json(error.code.status(), &body);
    add_retry_after(&mut response, error);
    response
}

/// Adds `Retry-After` when the error has one.
pub(crate) fn add_retry_after(response: &mut Response<WebBody>, error: &ApiError) {
    if let Some(secs) = error.retry_after_secs() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// The headers every answer carries.
pub(crate) fn add_security_headers(response: &mut Response<WebBody>) {
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// Reads a whole body of at most `limit` bytes; a larger one is `too_large`.
pub(crate) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("The request body is larger than {} KiB.", limit / 1024),
        )),
        Err(error) => Err(ApiError::invalid(format!(
            "The request body could not be read: {error}"
        ))),
    }
}

/// Decodes a JSON object body.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid(format!("The body is not the JSON expected: {error}")))
}

/// Decodes a form body (`application/x-www-form-urlencoded`).
pub(crate) fn parse_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|error| ApiError::invalid(format!("The form is not as expected: {error}")))
}

/// `WebBody` from a stream of chunks (live updates).
pub(crate) fn stream<S>(chunks: S) -> WebBody
where
    S: tokio_stream::Stream<Item = Bytes> + Send + Sync + 'static,
{
    use tokio_stream::StreamExt as _;
    http_body_util::StreamBody::new(chunks.map(|chunk| Ok(http_body::Frame::data(chunk)))).boxed()
}

/// The answer to a request for a path that exists with other methods.
pub(crate) fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This method is not allowed on this path.",
    )
}
