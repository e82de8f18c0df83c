//! Fetching a platform's repository into the operator's cache and reading the resource
//! documents of one commit, with libgit2 (git2). Blocking: callers run it on a blocking
//! thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository,
};
use kastell_crds::platform::GitSource;

use super::http::{self, HttpError, HttpOptions};

/// Why a repository could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("opening the cache repository {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    // libgit2's message without its "; class=Net (12)" suffix, which tells a reader nothing.
    #[error("fetching {url}: {}", source.message())]
    Fetch {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("{what} not found in {url}: {source}")]
    Resolve {
        what: String,
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("reading commit {commit}: {source}")]
    Read {
        commit: String,
        #[source]
        source: git2::Error,
    },
    #[error("path {path:?} is not a directory in commit {commit}")]
    NoSuchPath { path: String, commit: String },
    #[error("spec.git.path {0:?} must be relative and must not contain `..`")]
    BadPath(String),
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Credentials from the Secret `spec.git.credentialsSecret` names.
#[derive(Clone, Default)]
pub struct Credentials {
    /// HTTPS user name (`username`); a token host accepts any.
    pub username: Option<String>,
    /// HTTPS password or token (`password`).
    pub password: Option<String>,
    /// SSH private key in OpenSSH format (`identity`).
    pub identity: Option<String>,
    /// OpenSSH `known_hosts` lines for the server (`known_hosts`).
    pub known_hosts: Option<String>,
    /// PEM certificates of the CAs an HTTPS server's certificate must chain to
    /// (`ca.crt`); the system's CA certificates without it.
    pub ca_certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the secrets themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("identity", &self.identity.as_ref().map(|_| "***"))
            .field("known_hosts", &self.known_hosts.is_some())
            .field("ca_certificate", &self.ca_certificate.is_some())
            .finish()
    }
}

impl Credentials {
    /// Reads the keys of a Secret's data.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Self {
        let text = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(v).trim_end().to_owned())
        };
        Credentials {
            username: text("username"),
            password: text("password"),
            identity: data
                .get("identity")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            known_hosts: text("known_hosts"),
            ca_certificate: data.get("ca.crt").cloned(),
        }
    }
}

/// One YAML document found under the path.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Path of the file inside the repository.
    pub path: String,
    /// 0-based position in a multi-document file.
    pub index: usize,
    pub value: serde_yaml::Value,
}

/// What one commit holds for the sync.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Full commit id.
    pub commit: String,
    /// `Name <email>` of the commit's author.
    pub author: String,
    /// The signature from the commit's `gpgsig` header and the data it signs, when signed.
    pub signature: Option<(String, Vec<u8>)>,
    /// The documents of every `.yaml`/`.yml` file under the path, in path order.
    pub documents: Vec<Document>,
    /// Files that were not YAML, or documents that did not parse, with why.
    pub unreadable: Vec<String>,
}

/// Fetches the commit `source` names into the bare repository at `cache` and reads it.
///
/// # Errors
///
/// When the cache cannot be opened, the remote cannot be fetched, the branch, tag or
/// commit does not exist, or the path is not a directory of that commit.
pub fn fetch(
    cache: &Path,
    source: &GitSource,
    credentials: &Credentials,
) -> Result<Snapshot, FetchError> {
    let path = checked_path(source.path.as_deref())?;
    let repo = open_cache(cache)?;
    let (refspec, local_ref) = refspec(source);

    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(credentials, &source.url));
    // Tags named by `tag` are fetched by the refspec; no other tags are wanted.
    options.download_tags(git2::AutotagOption::None);
    let mut remote = repo
        .remote_anonymous(&source.url)
        .map_err(|e| fetch_error(&source.url, e))?;
    let mut fetch = || remote.fetch(&[refspec.as_str()], Some(&mut options), None);
    let fetched = if is_http(&source.url) {
        // libgit2 reaches http(s) remotes through the rustls transport (TLS 1.3 only),
        // which takes the CA and the credentials from here rather than from callbacks.
        let http = HttpOptions {
            ca_pem: credentials.ca_certificate.clone(),
            username: credentials.username.clone(),
            password: credentials.password.clone(),
        };
        http::with_session(&http, fetch)?
    } else {
        fetch()
    };
    fetched.map_err(|e| fetch_error(&source.url, e))?;

    let oid = resolve(&repo, source, &local_ref)?;
    read_commit(&repo, oid, &path)
}

fn is_http(url: &str) -> bool {
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    matches!(scheme.as_deref(), Some("https" | "http"))
}

fn fetch_error(url: &str, source: git2::Error) -> FetchError {
    FetchError::Fetch {
        url: http::redacted(url),
        source,
    }
}

/// The path made relative and free of `..`, so a spec cannot read outside the tree.
fn checked_path(path: Option<&str>) -> Result<String, FetchError> {
    let raw = path.unwrap_or("").trim();
    let trimmed = raw.trim_start_matches("./").trim_matches('/');
    if raw.starts_with('/') || trimmed.split('/').any(|part| part == "..") {
        return Err(FetchError::BadPath(raw.to_owned()));
    }
    Ok(trimmed.to_owned())
}

fn open_cache(cache: &Path) -> Result<Repository, FetchError> {
    let error = |source| FetchError::Cache {
        path: cache.to_owned(),
        source,
    };
    match Repository::open_bare(cache) {
        Ok(repo) => Ok(repo),
        Err(_) => {
            std::fs::create_dir_all(cache)
                .map_err(|e| error(git2::Error::from_str(&e.to_string())))?;
            Repository::init_bare(cache).map_err(error)
        }
    }
}

/// The refspec to fetch and the local ref it lands in. Forced (`+`): a force-pushed
/// branch replaces the old history rather than failing the fetch.
fn refspec(source: &GitSource) -> (String, String) {
    if let Some(tag) = &source.tag {
        let local = format!("refs/tags/{tag}");
        return (format!("+{local}:{local}"), local);
    }
    if source.commit.is_some() {
        // A commit is found among the branches' histories; servers need not serve a bare
        // commit id.
        return ("+refs/heads/*:refs/remotes/origin/*".into(), String::new());
    }
    match &source.branch {
        Some(branch) => {
            let local = format!("refs/remotes/origin/{branch}");
            (format!("+refs/heads/{branch}:{local}"), local)
        }
        None => {
            let local = "refs/remotes/origin/HEAD".to_owned();
            (format!("+HEAD:{local}"), local)
        }
    }
}

fn resolve(repo: &Repository, source: &GitSource, local_ref: &str) -> Result<Oid, FetchError> {
    let error = |what: String, source_error| FetchError::Resolve {
        what,
        url: http::redacted(&source.url),
        source: source_error,
    };
    if let Some(commit) = &source.commit {
        let object = repo
            .revparse_single(commit)
            .map_err(|e| error(format!("commit {commit}"), e))?;
        let commit = object
            .peel_to_commit()
            .map_err(|e| error(format!("commit {commit}"), e))?;
        return Ok(commit.id());
    }
    let reference = repo
        .find_reference(local_ref)
        .map_err(|e| error(local_ref.to_owned(), e))?;
    // A tag may be annotated: peel to the commit it names.
    let commit = reference
        .peel_to_commit()
        .map_err(|e| error(local_ref.to_owned(), e))?;
    Ok(commit.id())
}

fn read_commit(repo: &Repository, oid: Oid, path: &str) -> Result<Snapshot, FetchError> {
    let read_error = |source| FetchError::Read {
        commit: oid.to_string(),
        source,
    };
    let commit = repo.find_commit(oid).map_err(read_error)?;
    let author = commit.author();
    let author = format!(
        "{} <{}>",
        author.name().unwrap_or(""),
        author.email().unwrap_or("")
    );
    let signature = repo
        .extract_signature(&oid, None)
        .ok()
        .map(|(sig, data)| (String::from_utf8_lossy(&sig).into_owned(), data.to_vec()));

    let root = commit.tree().map_err(read_error)?;
    let tree = if path.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(path))
            .map_err(|_| no_such_path(path, oid))?;
        let object = entry.to_object(repo).map_err(read_error)?;
        object.into_tree().map_err(|_| no_such_path(path, oid))?
    };

    let mut documents = Vec::new();
    let mut unreadable = Vec::new();
    let mut files = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or("");
        if entry.kind() == Some(git2::ObjectType::Blob)
            && (name.ends_with(".yaml") || name.ends_with(".yml"))
        {
            files.push((format!("{dir}{name}"), entry.id()));
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(read_error)?;
    files.sort();
    for (file, id) in files {
        let full = if path.is_empty() {
            file
        } else {
            format!("{path}/{file}")
        };
        let blob = repo.find_blob(id).map_err(read_error)?;
        let Ok(text) = std::str::from_utf8(blob.content()) else {
            unreadable.push(format!("{full}: not UTF-8"));
            continue;
        };
        split_documents(&full, text, &mut documents, &mut unreadable);
    }
    Ok(Snapshot {
        commit: oid.to_string(),
        author,
        signature,
        documents,
        unreadable,
    })
}

fn no_such_path(path: &str, oid: Oid) -> FetchError {
    FetchError::NoSuchPath {
        path: path.to_owned(),
        commit: oid.to_string(),
    }
}

/// The non-empty documents of a multi-document YAML file.
pub fn split_documents(
    path: &str,
    text: &str,
    documents: &mut Vec<Document>,
    unreadable: &mut Vec<String>,
) {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde::Deserialize::deserialize(document) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(value) => documents.push(Document {
                path: path.to_owned(),
                index,
                value,
            }),
            Err(error) => {
                unreadable.push(format!("{path} document {index}: {error}"));
                // The deserializer cannot resume after a syntax error.
                break;
            }
        }
    }
}

fn callbacks<'a>(credentials: &'a Credentials, url: &'a str) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |_url, username, allowed| {
        // libgit2 asks again after a refused credential; a second refusal is final.
        attempts += 1;
        if attempts > 2 {
            return Err(git2::Error::from_str("the credentials were refused"));
        }
        credential(credentials, username, allowed)
    });
    callbacks.certificate_check(move |cert, host| {
        match cert.as_hostkey() {
            // SSH: the host key must be one of known_hosts; there is no trust on first
            // use, since a spoofed server could then feed the cluster any resources.
            Some(hostkey) => {
                let key = hostkey.hostkey().unwrap_or_default();
                let known = credentials.known_hosts.as_deref().unwrap_or("");
                if known_host(known, host, key) {
                    Ok(CertificateCheckStatus::CertificateOk)
                } else {
                    Err(git2::Error::from_str(&format!(
                        "the SSH host key of {host} is not in the known_hosts of \
                         spec.git.credentialsSecret ({url})"
                    )))
                }
            }
            // Not SSH: HTTPS goes through the rustls transport (`http`), which verifies
            // the server itself and never asks here.
            None => Ok(CertificateCheckStatus::CertificatePassthrough),
        }
    });
    callbacks
}

fn credential(
    credentials: &Credentials,
    username: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    if allowed.contains(CredentialType::SSH_KEY) {
        if let Some(identity) = &credentials.identity {
            let user = username.unwrap_or("git");
            return Cred::ssh_key_from_memory(user, None, identity, None);
        }
    }
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        if let Some(password) = &credentials.password {
            let user = credentials
                .username
                .as_deref()
                .or(username)
                .unwrap_or("git");
            return Cred::userpass_plaintext(user, password);
        }
    }
    if allowed.contains(CredentialType::USERNAME) {
        return Cred::username(username.unwrap_or("git"));
    }
    Err(git2::Error::from_str(
        "the server asks for credentials and spec.git.credentialsSecret has none that fit",
    ))
}

/// Whether `key` (the raw SSH public key blob) is listed for `host` in `known_hosts`.
/// Hashed entries (`|1|...`) are not matched: list the host in clear.
pub fn known_host(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    known_hosts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(blob)) = (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let names_host = hosts.split(',').any(|h| {
            h == host
                || h.strip_prefix('[')
                    .and_then(|rest| rest.split_once("]:"))
                    .is_some_and(|(name, _port)| name == host)
        });
        names_host
            && base64::engine::general_purpose::STANDARD
                .decode(blob)
                .is_ok_and(|decoded| decoded == key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_tree() {
        assert_eq!(checked_path(None).unwrap(), "");
        assert_eq!(checked_path(Some("./soc/")).unwrap(), "soc");
        assert!(checked_path(Some("../etc")).is_err());
        assert!(checked_path(Some("soc/../../x")).is_err());
        assert!(checked_path(Some("/etc")).is_err());
    }

    #[test]
    fn refspecs_are_forced_and_follow_tag_commit_branch() {
        let mut source = GitSource {
            url: "file:///r".into(),
            branch: Some("main".into()),
            tag: None,
            commit: None,
            path: None,
            interval: "1m".into(),
            credentials_secret: None,
            allowed_signers: vec![],
            webhook_secret: None,
            prune_on_removal: true,
        };
        assert_eq!(
            refspec(&source).0,
            "+refs/heads/main:refs/remotes/origin/main"
        );
        source.tag = Some("v1".into());
        assert_eq!(refspec(&source).0, "+refs/tags/v1:refs/tags/v1");
    }

    #[test]
    fn known_hosts_match_the_host_and_the_key() {
        let key = b"\x00\x00\x00\x0bssh-ed25519-key-bytes";
        let blob = base64::engine::general_purpose::STANDARD.encode(key);
        let known = format!("# comment\ngit.example.eu,[git.example.eu]:2222 ssh-ed25519 {blob}\n");
        assert!(known_host(&known, "git.example.eu", key));
        assert!(!known_host(&known, "evil.example.eu", key));
        assert!(!known_host(&known, "git.example.eu", b"other"));
        assert!(!known_host("", "git.example.eu", key));
    }

    #[test]
    fn multi_document_files_keep_their_positions() {
        let (mut documents, mut unreadable) = (Vec::new(), Vec::new());
        split_documents(
            "soc/rules.yaml",
            "a: 1\n---\n---\nb: 2\n",
            &mut documents,
            &mut unreadable,
        );
        assert!(unreadable.is_empty());
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[1].index, 2);
        split_documents("bad.yaml", "a: [", &mut documents, &mut unreadable);
        assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    }
}
