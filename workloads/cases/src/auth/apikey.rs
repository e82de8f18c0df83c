//! API keys: `kst_<id>_<secret>`, shown once when made, of which the store keeps the id
//! in clear (to find the key) and an argon2id hash of the secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use hmac::{Hmac, Mac};
use kastell_core::store::ApiKeyRecord;
use kastell_core::{CaseStore, Tlp};
use sha2::Sha256;

use super::{AuthError, Principal, Role};

/// Every key starts with this, so a bearer credential is told from an OIDC token at a
/// glance (and secret scanners can find leaked keys).
pub const KEY_PREFIX: &str = "kst_";

/// How long a checked key is trusted without hashing it again. argon2 is slow on
/// purpose (tens of milliseconds); hashing on every request would cap the API at a few
/// dozen requests a second per core.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// The cache is emptied when it holds this many keys, which bounds its memory.
const CACHE_MAX: usize = 10_000;

/// A key just made: the key itself (shown once, never stored) and its record.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: String,
    pub record: ApiKeyRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("hashing the key: {0}")]
    Hash(String),
}

fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// Makes a key for `name` with `role`, cleared up to `tlp`.
///
/// # Errors
/// When the random source or the hashing fails.
pub fn generate(name: &str, role: Role, tlp: Tlp) -> Result<NewKey, KeyError> {
    let id = random_hex(8)?;
    let secret = random_hex(32)?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| KeyError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| KeyError::Hash(e.to_string()))?;
    let hash = Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| KeyError::Hash(e.to_string()))?
        .to_string();
    Ok(NewKey {
        key: format!("{KEY_PREFIX}{id}_{secret}"),
        record: ApiKeyRecord {
            id,
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            tlp,
            hash,
            created_at: Utc::now(),
        },
    })
}

/// Checks keys against the store, remembering the good ones for [`CACHE_TTL`].
///
/// Each request still reads the key's row (one primary-key lookup): a key revoked by
/// `kastell apikey revoke`, which may run in another process, is refused at its next
/// request, and a changed role or TLP ceiling applies at once. Only the argon2 check is
/// skipped for a key seen within the TTL.
pub struct ApiKeys {
    store: Arc<dyn CaseStore>,
    /// By the HMAC-SHA-256 of the whole key under [`ApiKeys::cache_key`], so the cache
    /// holds no key, and what it holds cannot be checked against a guessed key outside
    /// this process; the value is the key's id and when it was checked.
    cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    /// Random, made when the process starts and never stored.
    cache_key: [u8; 32],
}

impl ApiKeys {
    pub fn new(store: Arc<dyn CaseStore>) -> Self {
        let mut cache_key = [0u8; 32];
        if let Err(error) = getrandom::fill(&mut cache_key) {
            // A zero key still caches correctly; it only loses the keying.
            tracing::warn!(%error, "no random key for the api key cache");
        }
        ApiKeys {
            store,
            cache: Mutex::new(HashMap::new()),
            cache_key,
        }
    }

    fn fingerprint(&self, key: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key)
            .expect("HMAC takes a key of any length");
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The caller a key stands for.
    ///
    /// # Errors
    /// [`AuthError::BadKey`] for a malformed, unknown or wrong key,
    /// [`AuthError::Revoked`] for a revoked one.
    pub async fn verify(&self, key: &str) -> Result<Principal, AuthError> {
        let (id, secret) = key
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or(AuthError::BadKey)?;
        let status = self
            .store
            .get_api_key_status(id)
            .await
            .map_err(|e| AuthError::Store(e.to_string()))?
            .ok_or(AuthError::BadKey)?;
        if let Some(at) = status.revoked_at {
            return Err(AuthError::Revoked { at });
        }
        let fingerprint = self.fingerprint(key);
        if !self.cached(&fingerprint, id) {
            let hash = status.key.hash.clone();
            let secret = secret.to_owned();
            // argon2 takes tens of milliseconds of CPU: off the async workers.
            let matches = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash)
                    .map(|parsed| {
                        Argon2::default()
                            .verify_password(secret.as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if !matches {
                return Err(AuthError::BadKey);
            }
            self.remember(fingerprint, id);
        }
        let now = Utc::now();
        if status.use_is_news(now) {
            // Losing one use record is better than refusing the request for it.
            if let Err(error) = self.store.mark_api_key_used(id, now).await {
                tracing::warn!(key_id = id, %error, "could not record the api key's use");
            }
        }
        let role: Role = status.key.role.parse().map_err(AuthError::Store)?;
        Ok(Principal {
            name: format!("apikey:{}", status.key.name),
            role,
            tlp: status.key.tlp,
        })
    }

    fn cached(&self, fingerprint: &[u8; 32], id: &str) -> bool {
        let Ok(cache) = self.cache.lock() else {
            return false;
        };
        cache
            .get(fingerprint)
            .is_some_and(|(cached_id, at)| cached_id == id && at.elapsed() < CACHE_TTL)
    }

    fn remember(&self, fingerprint: [u8; 32], id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(fingerprint, (id.to_owned(), Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_its_prefix_id_and_secret_and_the_record_holds_no_secret() {
        let new = generate("soc-bot", Role::Analyst, Tlp::Amber).unwrap();
        let (id, secret) = new
            .key
            .strip_prefix(KEY_PREFIX)
            .unwrap()
            .split_once('_')
            .unwrap();
        assert_eq!(id, new.record.id);
        assert_eq!(secret.len(), 64);
        assert!(new.record.hash.starts_with("$argon2id$"));
        assert!(!new.record.hash.contains(secret));
        let again = generate("soc-bot", Role::Analyst, Tlp::Amber).unwrap();
        assert_ne!(again.key, new.key);
    }
}
