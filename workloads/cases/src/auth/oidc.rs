//! OIDC bearer tokens: JWTs signed by the identity provider, checked against its JWKS
//! (read once from a file or an URL at start), with the caller's role read from a
//! configurable claim.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kastell_core::Tlp;
use serde_json::Value;

use super::{AuthError, Principal, Role};

/// How to check tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// A JWKS file, or an `http://`/`https://` URL of one.
    pub jwks: String,
    /// The `iss` every token must carry; unchecked when `None`.
    pub issuer: Option<String>,
    /// One of the token's `aud`; unchecked when `None`.
    pub audience: Option<String>,
    /// The claim holding the role, a dotted path for nested claims
    /// (`realm_access.roles` in Keycloak); a string, or an array whose first known role
    /// wins.
    pub role_claim: String,
    /// The claim holding the caller's TLP ceiling (`clear` … `red`); when `None`, or
    /// absent from a token, the ceiling is `default_tlp`.
    pub tlp_claim: Option<String>,
    pub default_tlp: Tlp,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("reading the JWKS file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching the JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the JWKS from {from} is not a JSON Web Key Set: {reason}")]
    Parse { from: String, reason: String },
    #[error("{name}: {reason}")]
    Config { name: &'static str, reason: String },
}

/// The environment variables `kastell run` (and any process serving the API) reads to
/// accept OIDC tokens; without [`ENV_JWKS`] only API keys are accepted.
pub const ENV_JWKS: &str = "KASTELL_OIDC_JWKS";
pub const ENV_ISSUER: &str = "KASTELL_OIDC_ISSUER";
pub const ENV_AUDIENCE: &str = "KASTELL_OIDC_AUDIENCE";
/// Default `roles`.
pub const ENV_ROLE_CLAIM: &str = "KASTELL_OIDC_ROLE_CLAIM";
pub const ENV_TLP_CLAIM: &str = "KASTELL_OIDC_TLP_CLAIM";
/// Default `amber`.
pub const ENV_DEFAULT_TLP: &str = "KASTELL_OIDC_DEFAULT_TLP";

/// The OIDC checker the environment configures, if it configures one.
///
/// # Errors
/// When the JWKS cannot be loaded or the default TLP is not a TLP.
pub async fn from_env() -> Result<Option<Oidc>, OidcError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let Some(jwks) = var(ENV_JWKS) else {
        return Ok(None);
    };
    let default_tlp = match var(ENV_DEFAULT_TLP) {
        Some(text) => text.parse().map_err(|reason| OidcError::Config {
            name: ENV_DEFAULT_TLP,
            reason,
        })?,
        None => Tlp::Amber,
    };
    let config = OidcConfig {
        jwks,
        issuer: var(ENV_ISSUER),
        audience: var(ENV_AUDIENCE),
        role_claim: var(ENV_ROLE_CLAIM).unwrap_or_else(|| "roles".to_owned()),
        tlp_claim: var(ENV_TLP_CLAIM),
        default_tlp,
    };
    Oidc::load(config).await.map(Some)
}

/// A token checker with its keys loaded.
pub struct Oidc {
    keys: JwkSet,
    config: OidcConfig,
}

/// Only signatures made with a private key: a JWKS publishes public keys, and accepting
/// `HS*` would let anyone who read the JWKS sign tokens with it.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Oidc {
    /// Loads the JWKS `config` names.
    ///
    /// # Errors
    /// When the JWKS cannot be read or fetched, or is not a key set.
    pub async fn load(config: OidcConfig) -> Result<Oidc, OidcError> {
        let from = config.jwks.clone();
        let text = if from.starts_with("http://") || from.starts_with("https://") {
            let fetch = |reason: String| OidcError::Fetch {
                url: from.clone(),
                reason,
            };
            let response = reqwest::get(&from)
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| fetch(e.to_string()))?;
            response.text().await.map_err(|e| fetch(e.to_string()))?
        } else {
            std::fs::read_to_string(&from).map_err(|source| OidcError::Read {
                path: from.clone(),
                source,
            })?
        };
        let keys: JwkSet = serde_json::from_str(&text).map_err(|e| OidcError::Parse {
            from,
            reason: e.to_string(),
        })?;
        Ok(Oidc::with_keys(keys, config))
    }

    pub fn with_keys(keys: JwkSet, config: OidcConfig) -> Oidc {
        Oidc { keys, config }
    }

    /// The caller a token stands for.
    ///
    /// # Errors
    /// [`AuthError::BadToken`] with the reason: bad signature, expired, wrong issuer or
    /// audience, unknown key, no role.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let bad = |reason: String| AuthError::BadToken(reason);
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(bad(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let jwk = self.key_for(header.kid.as_deref())?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        match &self.config.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| bad(e.to_string()))?
            .claims;
        let role = role_of(claim(&claims, &self.config.role_claim)).ok_or_else(|| {
            bad(format!(
                "claim {:?} holds no Kastell role",
                self.config.role_claim
            ))
        })?;
        let tlp = match &self.config.tlp_claim {
            Some(path) => match claim(&claims, path).and_then(Value::as_str) {
                Some(text) => text
                    .parse()
                    .map_err(|e: String| bad(format!("claim {path:?}: {e}")))?,
                None => self.config.default_tlp,
            },
            None => self.config.default_tlp,
        };
        let subject = ["preferred_username", "email", "sub"]
            .into_iter()
            .find_map(|name| claims.get(name).and_then(Value::as_str))
            .ok_or_else(|| bad("the token names no subject".to_owned()))?;
        Ok(Principal {
            name: format!("oidc:{subject}"),
            role,
            tlp,
        })
    }

    fn key_for(&self, kid: Option<&str>) -> Result<&Jwk, AuthError> {
        match kid {
            Some(kid) => self
                .keys
                .find(kid)
                .ok_or_else(|| AuthError::BadToken(format!("no key {kid:?} in the JWKS"))),
            None if self.keys.keys.len() == 1 => Ok(&self.keys.keys[0]),
            None => Err(AuthError::BadToken(
                "the token names no key (kid) and the JWKS holds several".to_owned(),
            )),
        }
    }
}

fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(claims, |value, part| value.get(part))
}

fn role_of(value: Option<&Value>) -> Option<Role> {
    match value? {
        Value::String(role) => role.parse().ok(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .find_map(|role| role.parse().ok()),
        _ => None,
    }
}
