//! The API's one error shape, `{"error": "<code>", "message": "<human reason>"}`, and the
//! extractors that give axum's own rejections (bad query, path or body) that shape
//! instead of axum's plain-text answers.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kastell_core::StoreError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use kastell_core::error_chain;

/// What every failed request answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code to branch on: `unauthenticated` (401), `forbidden` (403),
    /// `conflict`, `not_found`, `not_pending`, `invalid_query`,
    /// `invalid_path`, `invalid_json`, `invalid_body`, `invalid_header`,
    /// `unsupported_media_type`, `payload_too_large`, `method_not_allowed`,
    /// `store_unavailable`,
    /// `bus_unavailable`, `internal`.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// A failed request: its status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} {} not found", clip(&id.to_string())),
        )
    }

    pub fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound { kind, id } => ApiError::not_found(kind, id),
            StoreError::NotPending { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_pending", error.to_string())
            }
            StoreError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            StoreError::Corrupt { .. } => {
                tracing::error!(reason = %error_chain(&error), "case store holds corrupt data");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    error.to_string(),
                )
            }
            _ => {
                // The full chain (SQL errors included) goes to the log, the top-level
                // description to the client.
                tracing::error!(reason = %error_chain(&error), "case store failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!("the case store failed: {error}"),
                )
            }
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            clip_message(rejection.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            rejection.status(),
            "invalid_path",
            clip_message(rejection.body_text()),
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return too_large();
        }
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ => "invalid_body",
        };
        ApiError::new(
            rejection.status(),
            code,
            clip_message(rejection.body_text()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme the client should use.
            return (
                self.status,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(body),
            )
                .into_response();
        }
        (self.status, Json(body)).into_response()
    }
}

/// `Query` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// `Path` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// `Json` whose rejection is an [`ApiError`]. As an `Option`, an empty body (with or
/// without a content type) is `None`, so a client may send a bare `POST`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        refuse_encoded(req.headers())?;
        if !json_content_type(req.headers()) {
            // axum's own rejection, so the 415 reads the same as before.
            let Json(value) = <Json<T> as FromRequest<S>>::from_request(req, state).await?;
            return Ok(ApiJson(value));
        }
        let bytes = read_body(req, state).await?;
        refuse_nul(&bytes)?;
        refuse_non_object(&bytes)?;
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// Refuses a body sent with a `Content-Encoding` (gzip and the like): the API reads
/// bodies as they are, and would otherwise report compressed JSON as malformed JSON.
fn refuse_encoded(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let codings: Vec<&str> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .collect();
    if codings.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "the API reads request bodies uncompressed; send no Content-Encoding (got {:?})",
            codings.join(", ")
        ),
    ))
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return too_large();
        }
        ApiError::new(rejection.status(), "invalid_body", rejection.body_text())
    })
}

/// Refuses a JSON body with a NUL character (`\u0000`) in any string. PostgreSQL cannot
/// store NUL in text at all, and in a title or name it only hides text from people and
/// tools; refusing it at the door keeps both stores answering alike. JSON cannot carry a
/// raw NUL byte in a string, so the escape is the only spelling; `\\u0000` (an escaped
/// backslash, then `u0000`) is plain text and passes.
fn refuse_nul(body: &[u8]) -> Result<(), ApiError> {
    const ESCAPE: &[u8] = b"\\u0000";
    let mut at = 0;
    while let Some(found) = body[at..]
        .windows(ESCAPE.len())
        .position(|window| window == ESCAPE)
    {
        let start = at + found;
        let backslashes_before = body[..start]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes_before % 2 == 0 {
            return Err(ApiError::invalid_body(
                "text must not contain NUL characters (\\u0000)",
            ));
        }
        at = start + 1;
    }
    Ok(())
}

/// Refuses a well-formed JSON body that is not an object. Every request body here is an
/// object; serde would otherwise read an array positionally into the struct's fields
/// (and name the Rust type in its complaint). A body that is not JSON at all passes on,
/// so the parser reports where it breaks.
fn refuse_non_object(body: &[u8]) -> Result<(), ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(());
    };
    let kind = match value {
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
        serde_json::Value::Object(_) => return Ok(()),
    };
    Err(ApiError::invalid_body(format!(
        "the body must be a JSON object, not {kind}"
    )))
}

/// The most characters of a client's value (a path id, a route) an error message
/// repeats: enough to recognise it, never the client's whole input back.
pub const MAX_ECHO: usize = 64;

/// `text` when short, else its first [`MAX_ECHO`] characters, `…` and its length.
pub fn clip(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= MAX_ECHO {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX_ECHO).collect();
    format!("{head}… ({chars} characters)")
}

/// A message built by axum or serde from the client's input (a path that did not
/// parse, an unknown field), bounded like [`clip`] but longer, since the input is only
/// part of it.
fn clip_message(message: String) -> String {
    const MAX_MESSAGE: usize = 4 * MAX_ECHO;
    if message.chars().count() <= MAX_MESSAGE {
        return message;
    }
    let head: String = message.chars().take(MAX_MESSAGE).collect();
    format!("{head}… (cut)")
}

impl<T, S> OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        refuse_encoded(req.headers())?;
        let is_json = json_content_type(req.headers());
        let has_content_type = req.headers().contains_key(header::CONTENT_TYPE);
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        if has_content_type && !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a request body must be JSON: send `Content-Type: application/json`",
            ));
        }
        refuse_nul(&bytes)?;
        refuse_non_object(&bytes)?;
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(Some(ApiJson(value)))
    }
}

/// 413 for a body over [`super::MAX_BODY`].
fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("a request body may be at most {} bytes", super::MAX_BODY),
    )
}

fn json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_nul_is_refused_and_an_escaped_backslash_is_not() {
        assert!(refuse_nul(br#"{"title": "a\u0000b"}"#).is_err());
        assert!(refuse_nul(br#"{"title": "a\\\u0000b"}"#).is_err());
        assert!(refuse_nul(br#"{"title": "a\\u0000b"}"#).is_ok());
        assert!(refuse_nul(br#"{"title": "a\u0001b"}"#).is_ok());
    }

    #[test]
    fn long_values_are_clipped_in_messages() {
        assert_eq!(clip("12345"), "12345");
        let long = "9".repeat(20_000);
        let clipped = clip(&long);
        assert!(clipped.len() < 100, "{clipped}");
        assert!(clipped.ends_with("(20000 characters)"));
        let error = ApiError::not_found("case", &long);
        assert!(error.message.len() < 120);
    }
}
