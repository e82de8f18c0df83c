//! Commit-signature verification against `spec.git.allowedSigners`: SSH signatures (what
//! `git commit -S` writes with `gpg.format=ssh`), checked with the `ssh-key` crate's
//! SSHSIG support the way `ssh-keygen -Y verify -n git` does, and OpenPGP signatures (what
//! `git commit -S` writes with gpg), checked with rPGP (`pgp`, pure Rust, lighter than
//! sequoia-openpgp and needing neither gpg nor gpgme) against armored public keys.
//!
//! An OpenPGP key must also be in good standing when the sync runs: not revoked (by its own
//! revocation signature, for the primary key or the signing subkey) and not expired. Expiry
//! is judged at the time of verification, not at the signature's creation time: that time
//! is written by the signer, so the holder of an expired key could back-date a new
//! signature into the key's lifetime. A revocation refuses every signature of the key,
//! whatever its reason code, for the same reason.

use chrono::{DateTime, Utc};
use pgp::composed::{Deserializable, SignedPublicKey, SignedPublicSubKey, StandaloneSignature};
use pgp::packet::{Signature, SignatureType};
use pgp::types::PublicKeyTrait;
use ssh_key::{PublicKey, SshSig};

/// The SSHSIG namespace git signs commits and tags under.
const GIT_NAMESPACE: &str = "git";

/// Why a commit's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("commit {commit} is not signed, and spec.git.allowedSigners requires a signature")]
    Unsigned { commit: String },
    #[error(
        "commit {commit} has a GPG signature and spec.git.allowedSigners holds no OpenPGP key"
    )]
    Gpg { commit: String },
    #[error("commit {commit} has a signature that cannot be read: {reason}")]
    Malformed { commit: String, reason: String },
    #[error("commit {commit} is signed by {fingerprint}, which is not in spec.git.allowedSigners")]
    NotAllowed { commit: String, fingerprint: String },
    #[error("commit {commit}: the signature of {fingerprint} does not match the commit")]
    Invalid { commit: String, fingerprint: String },
    #[error(
        "commit {commit} is signed by {fingerprint}, but {reason}; sign with another key \
         listed in spec.git.allowedSigners, and remove this one"
    )]
    Revoked {
        commit: String,
        fingerprint: String,
        reason: String,
    },
    #[error(
        "commit {commit} is signed by {fingerprint}, whose OpenPGP key expired at {expired}; \
         sign with a key that is valid, or extend the key's expiry and list the re-exported \
         public key in spec.git.allowedSigners"
    )]
    Expired {
        commit: String,
        fingerprint: String,
        expired: String,
    },
    #[error("spec.git.allowedSigners entry {entry} holds no SSH or OpenPGP public key: {reason}")]
    BadSigner { entry: usize, reason: String },
}

/// The keys a commit may be signed by.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    keys: Vec<PublicKey>,
    pgp: Vec<SignedPublicKey>,
}

impl AllowedSigners {
    /// Reads `allowed_signers` lines (`principals [options] keytype base64 [comment]`) or
    /// bare OpenSSH public keys; blank lines and `#` comments are skipped.
    ///
    /// # Errors
    ///
    /// [`SignatureError::BadSigner`] for the first entry holding no key.
    pub fn parse(entries: &[String]) -> Result<Self, SignatureError> {
        let mut keys = Vec::new();
        let mut pgp = Vec::new();
        for (entry, text) in entries.iter().enumerate() {
            if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
                pgp.push(
                    parse_pgp(text)
                        .map_err(|reason| SignatureError::BadSigner { entry, reason })?,
                );
                continue;
            }
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(
                    parse_line(line)
                        .map_err(|reason| SignatureError::BadSigner { entry, reason })?,
                );
            }
        }
        Ok(AllowedSigners { keys, pgp })
    }

    /// Checks that `signature` (the commit's `gpgsig` header) is a valid SSH or OpenPGP
    /// signature of `signed` by one of the allowed keys, an OpenPGP key being neither
    /// revoked nor expired now.
    ///
    /// # Errors
    ///
    /// When the commit is unsigned, GPG-signed without OpenPGP keys listed, signed by
    /// another key, by a revoked or expired OpenPGP key, or the signature does not match.
    pub fn verify(
        &self,
        commit: &str,
        signature: Option<&(String, Vec<u8>)>,
    ) -> Result<String, SignatureError> {
        self.verify_at(commit, signature, Utc::now())
    }

    /// [`AllowedSigners::verify`] with OpenPGP key expiry judged at `now`.
    ///
    /// # Errors
    ///
    /// As [`AllowedSigners::verify`].
    pub fn verify_at(
        &self,
        commit: &str,
        signature: Option<&(String, Vec<u8>)>,
        now: DateTime<Utc>,
    ) -> Result<String, SignatureError> {
        let commit = commit.to_owned();
        let Some((armored, signed)) = signature else {
            return Err(SignatureError::Unsigned { commit });
        };
        if armored.contains("BEGIN PGP SIGNATURE") {
            return self.verify_pgp(commit, armored, signed, now);
        }
        let sig = SshSig::from_pem(armored.trim()).map_err(|e| SignatureError::Malformed {
            commit: commit.clone(),
            reason: e.to_string(),
        })?;
        let fingerprint = sig
            .public_key()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string();
        // The key inside the signature only selects which allowed key to try; trust
        // comes from the allowed list alone.
        let Some(key) = self.keys.iter().find(|k| k.key_data() == sig.public_key()) else {
            return Err(SignatureError::NotAllowed {
                commit,
                fingerprint,
            });
        };
        key.verify(GIT_NAMESPACE, signed, &sig)
            .map_err(|_| SignatureError::Invalid {
                commit: commit.clone(),
                fingerprint: fingerprint.clone(),
            })?;
        Ok(fingerprint)
    }
}

impl AllowedSigners {
    /// An OpenPGP signature: valid by the primary key or a signing subkey of an allowed
    /// key that is in good standing at `now`. Returns the signing key's fingerprint (hex).
    fn verify_pgp(
        &self,
        commit: String,
        armored: &str,
        signed: &[u8],
        now: DateTime<Utc>,
    ) -> Result<String, SignatureError> {
        if self.pgp.is_empty() {
            return Err(SignatureError::Gpg { commit });
        }
        let (sig, _) =
            StandaloneSignature::from_string(armored).map_err(|e| SignatureError::Malformed {
                commit: commit.clone(),
                reason: e.to_string(),
            })?;
        let issuers: Vec<Vec<u8>> = sig
            .signature
            .issuer()
            .iter()
            .map(|id| id.as_ref().to_vec())
            .collect();
        let issuer_fingerprints: Vec<Vec<u8>> = sig
            .signature
            .issuer_fingerprint()
            .iter()
            .map(|f| f.as_bytes().to_vec())
            .collect();
        let named = |key: &dyn PublicKeyTrait| {
            issuers.iter().any(|id| id[..] == *key.key_id().as_ref())
                || issuer_fingerprints
                    .iter()
                    .any(|f| f[..] == *key.fingerprint().as_bytes())
        };
        let shown = issuer_fingerprints
            .first()
            .or(issuers.first())
            .map(hex::encode_upper)
            .unwrap_or_else(|| "an unnamed OpenPGP key".into());

        let found = self.pgp.iter().find_map(|key| {
            if named(&key.primary_key) {
                return Some((key, None));
            }
            key.public_subkeys
                .iter()
                .find(|sub| named(&sub.key))
                .map(|sub| (key, Some(sub)))
        });
        let Some((key, subkey)) = found else {
            return Err(SignatureError::NotAllowed {
                commit,
                fingerprint: shown,
            });
        };
        let (fingerprint, valid) = match subkey {
            None => check_pgp(&sig, &key.primary_key, signed),
            Some(sub) => check_pgp(&sig, &sub.key, signed),
        };
        if valid.is_err() {
            return Err(SignatureError::Invalid {
                commit,
                fingerprint,
            });
        }
        match standing(key, subkey, now) {
            Ok(()) => Ok(fingerprint),
            Err(Standing::Revoked(reason)) => Err(SignatureError::Revoked {
                commit,
                fingerprint,
                reason,
            }),
            Err(Standing::Expired(at)) => Err(SignatureError::Expired {
                commit,
                fingerprint,
                expired: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
        }
    }
}

/// Why an OpenPGP key may not sign.
enum Standing {
    Revoked(String),
    Expired(DateTime<Utc>),
}

/// Whether the primary key, and the subkey that signed when it was one, are neither
/// revoked nor expired at `now`. Every signature looked at here was verified as the
/// primary key's own when the key was parsed ([`parse_pgp`]).
fn standing(
    key: &SignedPublicKey,
    subkey: Option<&SignedPublicSubKey>,
    now: DateTime<Utc>,
) -> Result<(), Standing> {
    if let Some(revocation) = key.details.revocation_signatures.first() {
        return Err(Standing::Revoked(revocation_reason("the key", revocation)));
    }
    // rPGP's own `expires_at` takes the longest expiry any self-signature ever stated; the
    // newest self-signature is the one in force (a shortened expiry must count).
    let certifications = key
        .details
        .users
        .iter()
        .flat_map(|user| &user.signatures)
        .filter(|sig| sig.is_certification())
        .chain(&key.details.direct_signatures);
    if let Some(at) =
        newest(certifications).and_then(|sig| expiry(key.primary_key.created_at(), sig))
    {
        if at <= now {
            return Err(Standing::Expired(at));
        }
    }
    let Some(sub) = subkey else {
        return Ok(());
    };
    let of_type = |typ| {
        sub.signatures
            .iter()
            .filter(move |sig| sig.typ() == Some(typ))
    };
    if let Some(revocation) = of_type(SignatureType::SubkeyRevocation).next() {
        return Err(Standing::Revoked(revocation_reason(
            "the signing subkey",
            revocation,
        )));
    }
    if let Some(at) = newest(of_type(SignatureType::SubkeyBinding))
        .and_then(|sig| expiry(sub.key.created_at(), sig))
    {
        if at <= now {
            return Err(Standing::Expired(at));
        }
    }
    Ok(())
}

fn newest<'a>(signatures: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    signatures.max_by_key(|sig| sig.created().copied())
}

/// When a key created at `created` expires by the self-signature `sig`; `None` when it
/// does not (no expiry, or an expiry of zero, which OpenPGP defines as none).
fn expiry(created: &DateTime<Utc>, sig: &Signature) -> Option<DateTime<Utc>> {
    let after = *sig.key_expiration_time()?;
    (after > chrono::Duration::zero()).then(|| *created + after)
}

fn revocation_reason(what: &str, sig: &Signature) -> String {
    let mut reason = format!("{what} is revoked");
    if let Some(at) = sig.created() {
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        reason.push_str(&format!(" since {at}"));
    }
    let mut why = Vec::new();
    if let Some(code) = sig.revocation_reason_code() {
        why.push(format!("{code:?}"));
    }
    if let Some(text) = sig.revocation_reason_string() {
        let text = String::from_utf8_lossy(text).trim().to_owned();
        if !text.is_empty() {
            why.push(format!("{text:?}"));
        }
    }
    if !why.is_empty() {
        reason.push_str(&format!(" ({})", why.join(", ")));
    }
    reason
}

/// The key's fingerprint (hex) and whether `sig` is its valid signature of `signed`.
fn check_pgp<K: PublicKeyTrait>(
    sig: &StandaloneSignature,
    key: &K,
    signed: &[u8],
) -> (String, Result<(), ()>) {
    let fingerprint = hex::encode_upper(key.fingerprint().as_bytes());
    (fingerprint, sig.verify(key, signed).map_err(drop))
}

/// An armored OpenPGP public key whose self-signatures and subkey bindings hold, so that
/// a subkey cannot be attached to an allowed key by someone else.
///
/// Certifications by other keys (what `gpg --export` includes after a key signing) are
/// dropped first: rPGP would check them as self-signatures and refuse the key, and they
/// play no part here (trust comes from the allowed list alone).
fn parse_pgp(text: &str) -> Result<SignedPublicKey, String> {
    let (mut key, _) = SignedPublicKey::from_string(text.trim()).map_err(|e| e.to_string())?;
    let primary = key.primary_key.clone();
    for user in &mut key.details.users {
        user.signatures.retain(|sig| issued_by(sig, &primary));
    }
    key.details.users.retain(|user| !user.signatures.is_empty());
    key.verify()
        .map_err(|e| format!("the OpenPGP key's self-signatures do not verify: {e}"))?;
    Ok(key)
}

/// Whether `sig` names `key` as its issuer (by fingerprint or key id); a signature naming
/// no issuer is kept, so that its verification decides.
fn issued_by(sig: &Signature, key: &impl PublicKeyTrait) -> bool {
    let fingerprints = sig.issuer_fingerprint();
    let ids = sig.issuer();
    (fingerprints.is_empty() && ids.is_empty())
        || fingerprints.iter().any(|f| **f == key.fingerprint())
        || ids.iter().any(|id| **id == key.key_id())
}

/// The public key of one line: from the first field that is a key type on.
fn parse_line(line: &str) -> Result<PublicKey, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let start = fields
        .iter()
        .position(|f| is_key_type(f))
        .ok_or_else(|| "no key type (ssh-ed25519, ecdsa-sha2-*, ssh-rsa) found".to_owned())?;
    PublicKey::from_openssh(&fields[start..].join(" ")).map_err(|e| e.to_string())
}

fn is_key_type(field: &str) -> bool {
    field.starts_with("ssh-") || field.starts_with("ecdsa-sha2-") || field.starts_with("sk-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::private::{Ed25519Keypair, PrivateKey};
    use ssh_key::HashAlg;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn signed(key: &PrivateKey, data: &[u8]) -> (String, Vec<u8>) {
        let sig = key.sign(GIT_NAMESPACE, HashAlg::Sha512, data).unwrap();
        (sig.to_pem(ssh_key::LineEnding::LF).unwrap(), data.to_vec())
    }

    fn allowed(key: &PrivateKey) -> AllowedSigners {
        let line = format!(
            "soc@example.eu namespaces=\"git\" {}",
            key.public_key().to_openssh().unwrap()
        );
        AllowedSigners::parse(&[line]).unwrap()
    }

    #[test]
    fn an_allowed_key_verifies() {
        let k = key(1);
        let fingerprint = allowed(&k)
            .verify("c1", Some(&signed(&k, b"tree 123\n")))
            .unwrap();
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    }

    #[test]
    fn other_keys_tampered_data_unsigned_and_gpg_are_refused() {
        let (k, other) = (key(1), key(2));
        let signers = allowed(&k);
        assert!(matches!(
            signers.verify("c1", Some(&signed(&other, b"x"))),
            Err(SignatureError::NotAllowed { .. })
        ));
        let (armored, _) = signed(&k, b"tree 123\n");
        assert!(matches!(
            signers.verify("c1", Some(&(armored, b"tree 666\n".to_vec()))),
            Err(SignatureError::Invalid { .. })
        ));
        assert_eq!(
            signers.verify("c1", None),
            Err(SignatureError::Unsigned {
                commit: "c1".into()
            })
        );
        let gpg = "-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----".to_owned();
        assert!(matches!(
            signers.verify("c1", Some(&(gpg, vec![]))),
            Err(SignatureError::Gpg { .. })
        ));
    }

    /// OpenPGP keys made with rPGP: a v4 Ed25519 key created on 2020-01-01, the self-
    /// signatures given (creation offset from now in seconds, expiry after the key's
    /// creation in days), and a signature of `data` by it.
    mod openpgp {
        use chrono::{DateTime, Duration, TimeZone, Utc};
        use pgp::composed::{
            ArmorOptions, KeyType, SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
            StandaloneSignature,
        };
        use pgp::crypto::hash::HashAlgorithm;
        use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
        use pgp::types::{KeyDetails, Password, Tag};

        pub fn created() -> DateTime<Utc> {
            Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap()
        }

        pub fn key() -> SignedSecretKey {
            let mut params = SecretKeyParamsBuilder::default();
            params
                .key_type(KeyType::Ed25519Legacy)
                .can_certify(true)
                .can_sign(true)
                .primary_user_id("ada <ada@soc.example.eu>".into())
                .created_at(created());
            let secret = params
                .build()
                .unwrap()
                .generate(rand::thread_rng())
                .unwrap();
            secret.sign(rand::thread_rng(), &Password::empty()).unwrap()
        }

        /// A new self-signature on the user id, made `offset` seconds from now, stating an
        /// expiry `days` after the key's creation.
        pub fn self_signature(
            key: &SignedSecretKey,
            offset: i64,
            days: i64,
        ) -> pgp::packet::Signature {
            let mut config = SignatureConfig::v4(
                SignatureType::CertPositive,
                key.primary_key.algorithm(),
                HashAlgorithm::Sha256,
            );
            config.hashed_subpackets = vec![
                Subpacket::regular(SubpacketData::SignatureCreationTime(
                    Utc::now() + Duration::seconds(offset),
                ))
                .unwrap(),
                Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint())).unwrap(),
                Subpacket::regular(SubpacketData::KeyExpirationTime(Duration::days(days))).unwrap(),
            ];
            config.unhashed_subpackets =
                vec![Subpacket::regular(SubpacketData::Issuer(key.key_id())).unwrap()];
            config
                .sign_certification(
                    &key.primary_key,
                    &key.primary_key.public_key(),
                    &Password::empty(),
                    Tag::UserId,
                    &key.details.users[0].id,
                )
                .unwrap()
        }

        pub fn armored(key: &SignedSecretKey, extra: Vec<pgp::packet::Signature>) -> String {
            let mut public: SignedPublicKey = key.signed_public_key();
            public.details.users[0].signatures.extend(extra);
            public.to_armored_string(ArmorOptions::default()).unwrap()
        }

        pub fn sign(key: &SignedSecretKey, data: &[u8]) -> String {
            let mut config = SignatureConfig::v4(
                SignatureType::Binary,
                key.primary_key.algorithm(),
                HashAlgorithm::Sha256,
            );
            config.hashed_subpackets = vec![
                Subpacket::regular(SubpacketData::SignatureCreationTime(Utc::now())).unwrap(),
                Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint())).unwrap(),
            ];
            config.unhashed_subpackets =
                vec![Subpacket::regular(SubpacketData::Issuer(key.key_id())).unwrap()];
            let sig = config
                .sign(&key.primary_key, &Password::empty(), data)
                .unwrap();
            StandaloneSignature::new(sig)
                .to_armored_string(ArmorOptions::default())
                .unwrap()
        }
    }

    #[test]
    fn the_newest_openpgp_self_signature_states_the_expiry() {
        let key = openpgp::key();
        let data = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nrules\n".to_vec();
        let signature = Some((openpgp::sign(&key, &data), data));

        // No expiry at all, then an expiry in 2030: valid now.
        let ten_years = openpgp::self_signature(&key, 1, 3650);
        let signers =
            AllowedSigners::parse(&[openpgp::armored(&key, vec![ten_years.clone()])]).unwrap();
        signers.verify("c1", signature.as_ref()).unwrap();

        // A newer self-signature shortens the expiry to one day after creation: the key
        // expired on 2020-01-02, although an older self-signature still says 2030.
        let one_day = openpgp::self_signature(&key, 2, 1);
        let shortened = openpgp::armored(&key, vec![ten_years, one_day]);
        let refused = AllowedSigners::parse(&[shortened])
            .unwrap()
            .verify("c1", signature.as_ref());
        match refused {
            Err(SignatureError::Expired { expired, .. }) => {
                assert_eq!(expired, "2020-01-02T00:00:00Z");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_line_without_a_key_is_an_error() {
        let error =
            AllowedSigners::parse(&["# keys\n".into(), "alice only-a-name".into()]).unwrap_err();
        assert!(matches!(error, SignatureError::BadSigner { entry: 1, .. }));
    }
}
