//! The push webhook: `POST /hooks/git/{namespace}/{platform}` from GitHub, Gitea or
//! GitLab, authenticated with the shared secret in the platform's
//! `spec.git.webhookSecret` (key `token`), wakes that platform's sync loop.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use kastell_crds::SecOpsPlatform;
use kube::Api;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Syncer;

/// The key of the webhook Secret holding the shared secret.
pub const SECRET_KEY: &str = "token";

/// Which forge sent a hook, told by the header that authenticated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    GitLab,
}

/// Why a hook is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("no X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token header")]
    Unsigned,
    #[error("the signature or token does not match the platform's webhook secret")]
    Mismatch,
}

/// Authenticates a hook: HMAC-SHA256 of the body (GitHub `X-Hub-Signature-256:
/// sha256=<hex>`, Gitea `X-Gitea-Signature: <hex>`) or GitLab's `X-Gitlab-Token`, the
/// secret itself. Every comparison is constant-time.
///
/// # Errors
///
/// [`HookError::Unsigned`] without any of the headers, [`HookError::Mismatch`] when the
/// one present does not match.
pub fn authenticate(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<Forge, HookError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hmac_matches = |hex_digest: &str| {
        let Ok(expected) = hex::decode(hex_digest.trim()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(body);
        // verify_slice compares in constant time.
        mac.verify_slice(&expected).is_ok()
    };
    if let Some(value) = header("x-hub-signature-256") {
        let digest = value.strip_prefix("sha256=").unwrap_or("");
        return hmac_matches(digest)
            .then_some(Forge::GitHub)
            .ok_or(HookError::Mismatch);
    }
    if let Some(value) = header("x-gitea-signature") {
        return hmac_matches(value)
            .then_some(Forge::Gitea)
            .ok_or(HookError::Mismatch);
    }
    if let Some(token) = header("x-gitlab-token") {
        // Hashing first makes both sides the same length, so the comparison's time says
        // nothing about the secret's length either.
        let (given, wanted) = (Sha256::digest(token.as_bytes()), Sha256::digest(secret));
        return bool::from(given.ct_eq(&wanted))
            .then_some(Forge::GitLab)
            .ok_or(HookError::Mismatch);
    }
    Err(HookError::Unsigned)
}

/// Whether the event is one that can change the repository (a push), or a ping.
fn event_kind(forge: Forge, headers: &HeaderMap) -> EventKind {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let event = match forge {
        Forge::GitHub => header("x-github-event"),
        Forge::Gitea => header("x-gitea-event"),
        Forge::GitLab => header("x-gitlab-event"),
    };
    match event {
        "push" | "Push Hook" | "Tag Push Hook" | "create" => EventKind::Push,
        "ping" => EventKind::Ping,
        _ => EventKind::Other,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum EventKind {
    Push,
    Ping,
    Other,
}

/// The webhook's routes.
pub fn router(syncer: Arc<Syncer>) -> Router {
    Router::new()
        .route("/hooks/git/{namespace}/{platform}", post(hook))
        .with_state(syncer)
}

#[tracing::instrument(skip_all, fields(namespace = %namespace, name = %platform))]
async fn hook(
    State(syncer): State<Arc<Syncer>>,
    Path((namespace, platform)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let secret = match webhook_secret(&syncer, &namespace, &platform).await {
        Ok(secret) => secret,
        Err(refusal) => return refusal,
    };
    let forge = match authenticate(&headers, &body, &secret) {
        Ok(forge) => forge,
        Err(error) => {
            tracing::warn!(%error, "git webhook refused");
            return (StatusCode::UNAUTHORIZED, error.to_string());
        }
    };
    match event_kind(forge, &headers) {
        EventKind::Ping => (StatusCode::OK, "pong".into()),
        EventKind::Other => (StatusCode::OK, "ignored: not a push event".into()),
        EventKind::Push => {
            if syncer.trigger(&namespace, &platform) {
                tracing::info!(?forge, "git webhook: sync triggered");
                (StatusCode::ACCEPTED, "sync triggered".into())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the platform's sync is not running yet; retry".into(),
                )
            }
        }
    }
}

/// The shared secret of a platform's webhook. The answers for an unknown platform and
/// for one without a webhook secret are the same, so the endpoint tells an unauthenticated
/// caller nothing about which platforms exist.
async fn webhook_secret(
    syncer: &Syncer,
    namespace: &str,
    platform: &str,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            "no platform with a git webhook secret here".to_owned(),
        )
    };
    let api: Api<SecOpsPlatform> = Api::namespaced(syncer.client(), namespace);
    let found = api.get_opt(platform).await.map_err(|error| {
        tracing::warn!(%error, "reading the platform for a git webhook");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot read the platform".to_owned(),
        )
    })?;
    let secret_name = found
        .and_then(|p| p.spec.git)
        .and_then(|g| g.webhook_secret)
        .ok_or_else(not_found)?;
    let data = super::read_secret(&syncer.client(), namespace, &secret_name)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "reading the git webhook secret");
            not_found()
        })?;
    data.get(SECRET_KEY)
        .filter(|s| !s.is_empty())
        .cloned()
        .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn github_gitea_and_gitlab_authenticate() {
        let (secret, body) = (
            b"s3cret".as_slice(),
            br#"{"ref":"refs/heads/main"}"#.as_slice(),
        );
        let github = format!("sha256={}", sign(secret, body));
        assert_eq!(
            authenticate(&headers(&[("x-hub-signature-256", &github)]), body, secret),
            Ok(Forge::GitHub)
        );
        assert_eq!(
            authenticate(
                &headers(&[("x-gitea-signature", &sign(secret, body))]),
                body,
                secret
            ),
            Ok(Forge::Gitea)
        );
        assert_eq!(
            authenticate(&headers(&[("x-gitlab-token", "s3cret")]), body, secret),
            Ok(Forge::GitLab)
        );
    }

    #[test]
    fn wrong_secrets_tampered_bodies_and_missing_headers_are_refused() {
        let (secret, body) = (b"s3cret".as_slice(), b"{}".as_slice());
        let forged = format!("sha256={}", sign(b"other", body));
        assert_eq!(
            authenticate(&headers(&[("x-hub-signature-256", &forged)]), body, secret),
            Err(HookError::Mismatch)
        );
        let good = sign(secret, body);
        assert_eq!(
            authenticate(&headers(&[("x-gitea-signature", &good)]), b"{ }", secret),
            Err(HookError::Mismatch)
        );
        assert_eq!(
            authenticate(&headers(&[("x-gitlab-token", "s3cre")]), body, secret),
            Err(HookError::Mismatch)
        );
        assert_eq!(
            authenticate(
                &headers(&[("x-hub-signature-256", "sha1=abc")]),
                body,
                secret
            ),
            Err(HookError::Mismatch)
        );
        assert_eq!(
            authenticate(&HeaderMap::new(), body, secret),
            Err(HookError::Unsigned)
        );
    }

    #[test]
    fn pushes_and_pings_are_told_apart() {
        let h = headers(&[("x-github-event", "push")]);
        assert_eq!(event_kind(Forge::GitHub, &h), EventKind::Push);
        let h = headers(&[("x-gitlab-event", "Tag Push Hook")]);
        assert_eq!(event_kind(Forge::GitLab, &h), EventKind::Push);
        let h = headers(&[("x-gitea-event", "issues")]);
        assert_eq!(event_kind(Forge::Gitea, &h), EventKind::Other);
        let h = headers(&[("x-github-event", "ping")]);
        assert_eq!(event_kind(Forge::GitHub, &h), EventKind::Ping);
    }
}
