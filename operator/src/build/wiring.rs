//! What a stage pod is given to reach the rest of the platform: the serving certificate of
//! its endpoint (`spec.tls`), the NATS TLS files and credentials (`spec.bus`), and for the
//! stages that hold the case store, its URL and password (`spec.storage.postgresql`).
//! Every Secret is mounted read-only with only the keys the stage reads, and every file is
//! named to the stage by the environment variable of its flag (docs/cluster.md), so no
//! credential is in the pod's environment or arguments, only paths.

use k8s_openapi::api::core::v1::{EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use kastell_crds::platform::StorageKind;

use super::{BuildInput, Stage};

/// Where the endpoint's certificate, key and client CA are mounted.
pub const TLS_DIR: &str = "/etc/kastell/tls";
/// Where the NATS CA (and client certificate) are mounted.
pub const NATS_TLS_DIR: &str = "/etc/kastell/nats-tls";
/// Where the NATS `.creds` file is mounted.
pub const NATS_CREDS_DIR: &str = "/etc/kastell/nats-creds";
/// Where the NATS `user:password` file is mounted.
pub const NATS_USER_PASSWORD_DIR: &str = "/etc/kastell/nats-user-password";
/// Where the NATS token file is mounted.
pub const NATS_TOKEN_DIR: &str = "/etc/kastell/nats-token";
/// Where the PostgreSQL password is mounted.
pub const STORE_PASSWORD_DIR: &str = "/etc/kastell/store-password";
/// Where the CA of the PostgreSQL server is mounted.
pub const STORE_CA_DIR: &str = "/etc/kastell/store-tls";

/// Where the Secrets named by IntelFeeds (`spec.apiKeySecret`) are mounted, one
/// directory per Secret: the enrich stage reads `<dir>/<name>/<key>`.
pub const FEED_SECRETS_DIR: &str = "/etc/kastell/secrets";

/// Where the Secrets named by Sensors for their listeners' TLS files
/// (`spec.transport.tls.secretName`) are mounted, one directory per Secret: admission
/// rewrites the Sensor's file fields in the ingest bundle to `<dir>/<name>/<key>`.
pub const SENSOR_TLS_DIR: &str = "/etc/kastell/sensor-tls";

/// Owner and group may read, nobody may write: the pod's fsGroup owns the files.
const SECRET_FILE_MODE: i32 = 0o440;

/// One Secret mounted into a stage, and the variables naming its files.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretMount {
    pub volume: Volume,
    pub mount: VolumeMount,
    pub env: Vec<EnvVar>,
}

fn secret_mount(
    volume: &str,
    secret: &str,
    dir: &str,
    keys: &[(&str, &str)],
    env: &[(&str, &str)],
) -> SecretMount {
    SecretMount {
        volume: Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                // Only the keys read: a missing one fails the mount visibly, instead of
                // the stage failing on a file that is not there.
                items: Some(
                    keys.iter()
                        .map(|(key, path)| KeyToPath {
                            key: (*key).into(),
                            path: (*path).into(),
                            mode: None,
                        })
                        .collect(),
                ),
                default_mode: Some(SECRET_FILE_MODE),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        mount: VolumeMount {
            name: volume.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        env: env
            .iter()
            .map(|(name, file)| env_var(name, &format!("{dir}/{file}")))
            .collect(),
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The Secrets a stage mounts.
pub fn secret_mounts(input: &BuildInput, stage: Stage) -> Vec<SecretMount> {
    let spec = &input.platform.spec;
    let mut mounts = Vec::new();
    if let Some(tls) = &spec.tls {
        let mut keys = vec![("tls.crt", "tls.crt"), ("tls.key", "tls.key")];
        let mut env = vec![
            ("KASTELL_TLS_CERT", "tls.crt"),
            ("KASTELL_TLS_KEY", "tls.key"),
        ];
        if tls.mutual {
            keys.push(("ca.crt", "ca.crt"));
            env.push(("KASTELL_TLS_CLIENT_CA", "ca.crt"));
        }
        mounts.push(secret_mount("tls", &tls.secret_name, TLS_DIR, &keys, &env));
    }
    if let Some(bus_tls) = &spec.bus.tls {
        let mut keys = vec![("ca.crt", "ca.crt")];
        let mut env = vec![("KASTELL_NATS_CA_FILE", "ca.crt")];
        if bus_tls.client_certificate {
            keys.extend([("tls.crt", "tls.crt"), ("tls.key", "tls.key")]);
            env.extend([
                ("KASTELL_NATS_CERT_FILE", "tls.crt"),
                ("KASTELL_NATS_KEY_FILE", "tls.key"),
            ]);
        }
        mounts.push(secret_mount(
            "nats-tls",
            &bus_tls.secret_name,
            NATS_TLS_DIR,
            &keys,
            &env,
        ));
    }
    if let Some(creds) = &spec.bus.credentials_secret {
        mounts.push(secret_mount(
            "nats-creds",
            &creds.name,
            NATS_CREDS_DIR,
            &[(&creds.key, "nats.creds")],
            &[("KASTELL_NATS_CREDS_FILE", "nats.creds")],
        ));
    }
    if let Some(user) = &spec.bus.user_password_secret {
        mounts.push(secret_mount(
            "nats-user-password",
            &user.name,
            NATS_USER_PASSWORD_DIR,
            &[(&user.key, "user-password")],
            &[("KASTELL_NATS_USER_PASSWORD_FILE", "user-password")],
        ));
    }
    if let Some(token) = &spec.bus.token_secret {
        mounts.push(secret_mount(
            "nats-token",
            &token.name,
            NATS_TOKEN_DIR,
            &[(&token.key, "token")],
            &[("KASTELL_NATS_TOKEN_FILE", "token")],
        ));
    }
    if stage == Stage::Enrich {
        mounts.extend(feed_secret_mounts(input));
    }
    if stage == Stage::Ingest {
        mounts.extend(sensor_secret_mounts(input));
    }
    if let Some(postgres) = postgres_for(input, stage) {
        mounts.push(secret_mount(
            "store-password",
            &postgres.password_secret.name,
            STORE_PASSWORD_DIR,
            &[(&postgres.password_secret.key, "password")],
            &[("KASTELL_STORE_PASSWORD_FILE", "password")],
        ));
        if let Some(ca) = &postgres.ca_secret {
            mounts.push(secret_mount(
                "store-tls",
                ca,
                STORE_CA_DIR,
                &[("ca.crt", "ca.crt")],
                &[],
            ));
        }
    }
    mounts
}

/// The Secrets the enrich stage's IntelFeeds name for their API keys, each mounted with
/// only the keys the feeds name. The feeds are read from the enrich bundle, so a feed
/// refused by admission mounts nothing.
fn feed_secret_mounts(input: &BuildInput) -> Vec<SecretMount> {
    let mut keys = SecretKeys::new();
    for (_, yaml) in bundle_entries(input, Stage::Enrich, "IntelFeed.") {
        let Ok(feed) = serde_yaml::from_str::<kastell_crds::IntelFeed>(yaml) else {
            continue;
        };
        if let Some(secret) = feed.spec.api_key_secret {
            keys.entry(secret.name).or_default().insert(secret.key);
        }
    }
    secret_dirs("feed-secret", FEED_SECRETS_DIR, &keys)
}

/// The Secrets the ingest stage's Sensors name for their listeners' certificate, key and
/// client CA, each mounted with only the keys the Sensors name. Read from the ingest
/// bundle, where admission already made the file fields paths under [`SENSOR_TLS_DIR`]:
/// the key is what follows the Secret's directory, so the mount and the path the stage
/// opens cannot disagree.
fn sensor_secret_mounts(input: &BuildInput) -> Vec<SecretMount> {
    let mut keys = SecretKeys::new();
    for (_, yaml) in bundle_entries(input, Stage::Ingest, "Sensor.") {
        let Ok(sensor) = serde_yaml::from_str::<kastell_crds::Sensor>(yaml) else {
            continue;
        };
        let Some(tls) = crate::admission::listener_tls(&sensor.spec.transport) else {
            continue;
        };
        let Some(secret) = &tls.secret_name else {
            continue;
        };
        let dir = format!("{SENSOR_TLS_DIR}/{secret}/");
        for (_, file) in crate::admission::tls_files(tls) {
            if let Some(key) = file.strip_prefix(&dir) {
                keys.entry(secret.clone())
                    .or_default()
                    .insert(key.to_owned());
            }
        }
    }
    secret_dirs("sensor-tls", SENSOR_TLS_DIR, &keys)
}

/// Secret name to the keys read from it.
type SecretKeys = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// A stage's bundle entries whose key starts with `prefix` (one kind of resource).
fn bundle_entries<'a>(
    input: &'a BuildInput,
    stage: Stage,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a String)> {
    input
        .bundles
        .get(&stage)
        .map(|bundle| bundle.entries.iter())
        .into_iter()
        .flatten()
        .filter(move |(key, _)| key.starts_with(prefix))
}

/// One mount per Secret at `<dir>/<secret>`, its keys under their own names.
fn secret_dirs(volume: &str, dir: &str, keys: &SecretKeys) -> Vec<SecretMount> {
    keys.iter()
        .enumerate()
        .map(|(at, (secret, keys))| {
            let items: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), k.as_str())).collect();
            // Volume names must be DNS labels; Secret names may be longer than one.
            secret_mount(
                &format!("{volume}-{at}"),
                secret,
                &format!("{dir}/{secret}"),
                &items,
                &[],
            )
        })
        .collect()
}

/// The PostgreSQL settings, for the stages that hold the case store (cases and respond).
fn postgres_for<'a>(
    input: &'a BuildInput,
    stage: Stage,
) -> Option<&'a kastell_crds::platform::PostgresSpec> {
    let storage = &input.platform.spec.storage;
    let holds_store = matches!(stage, Stage::Cases | Stage::Respond);
    (holds_store && storage.kind == StorageKind::Postgresql)
        .then_some(storage.postgresql.as_ref())
        .flatten()
}

/// The variables that are not file paths: the NATS URL, and the case store's URL (its
/// password comes from `KASTELL_STORE_PASSWORD_FILE`).
pub fn plain_env(input: &BuildInput, stage: Stage) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(url) = &input.platform.spec.bus.url {
        env.push(env_var("KASTELL_NATS_URL", url));
    }
    if let Some(postgres) = postgres_for(input, stage) {
        env.push(env_var("KASTELL_STORE", &store_url(postgres)));
    }
    env
}

/// `postgres://user@host:port/database?sslmode=…[&sslrootcert=…]`, every part encoded.
pub fn store_url(postgres: &kastell_crds::platform::PostgresSpec) -> String {
    let host = if postgres.host.contains(':') && !postgres.host.starts_with('[') {
        format!("[{}]", postgres.host)
    } else {
        postgres.host.clone()
    };
    let mut url = match url::Url::parse(&format!("postgres://{host}")) {
        Ok(url) => url,
        // The CRD's pattern keeps such hosts out; should one get through, the stage is
        // given it as written and reports the URL it cannot use.
        Err(_) => return format!("postgres://{}@{host}/{}", postgres.user, postgres.database),
    };
    let _ = url.set_username(&postgres.user);
    let _ = url.set_port(Some(postgres.port));
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear().push(&postgres.database);
    }
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("sslmode", postgres.ssl_mode.as_str());
        if postgres.ca_secret.is_some() {
            query.append_pair("sslrootcert", &format!("{STORE_CA_DIR}/ca.crt"));
        }
    }
    url.into()
}

/// What keeps stages of this platform from starting in a cluster although its objects
/// apply, for the platform's Ready message: an operator that refused the platform over it
/// would also take down the stages that do run.
pub fn cluster_gaps(platform: &kastell_crds::SecOpsPlatform) -> Vec<&'static str> {
    let mut gaps = Vec::new();
    if platform.spec.tls.is_none() {
        gaps.push(
            "without spec.tls the cases stage does not start (it serves its API over plain \
             HTTP only on loopback)",
        );
    }
    if platform.spec.storage.kind == StorageKind::Sqlite {
        gaps.push(
            "with storage type sqlite the respond stage has no case store (the cases \
             stage's volume is not shared); use postgresql",
        );
    }
    gaps
}
