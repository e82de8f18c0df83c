//! The git sync against a real kube-apiserver (tests/control-plane, or the cluster in
//! KASTELL_KUBECONFIG) and git repositories the tests make with libgit2: the project's
//! example SOC (real SigmaHQ rules, examples/soc) applied from a commit, a removed file
//! pruned, drift taken back, a force-pushed branch followed, an unsigned or wrongly signed
//! commit refused when signatures are required, and the push webhook over real HTTP on
//! 127.0.0.1.

use std::path::PathBuf;
use std::sync::Arc;

use git2::{Oid, Repository, Signature};
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kastell_crds::{DetectionRule, SecOpsPlatform, Sensor};
use kastell_kube_harness::{setup, TestEnv};
use kastell_operator::gitsync::{self, Syncer};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sha2::Sha256;
use ssh_key::private::{Ed25519Keypair, PrivateKey};
use ssh_key::{HashAlg, LineEnding};

mod support;
use support::{eventually, start_operator};

const AUTHOR: &str = "Ada Lovelace";
const EMAIL: &str = "ada@soc.example.eu";

/// A repository the test commits to, with a work tree.
struct Repo {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        Repo { dir, repo }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    fn write(&self, path: &str, text: &str) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    fn remove(&self, path: &str) {
        std::fs::remove_file(self.dir.path().join(path)).unwrap();
    }

    /// Commits the work tree as it is on top of `parent` and points `main` at the new
    /// commit (forced, as a force push would), signed by `key` when given.
    fn commit(&self, message: &str, parent: Option<Oid>, key: Option<&PrivateKey>) -> Oid {
        let mut index = self.repo.index().unwrap();
        index.clear().unwrap();
        index
            .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let who = Signature::now(AUTHOR, EMAIL).unwrap();
        let parents: Vec<git2::Commit> = parent
            .map(|p| self.repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let buffer = self
            .repo
            .commit_create_buffer(&who, &who, message, &tree, &parents)
            .unwrap();
        let content = std::str::from_utf8(&buffer).unwrap();
        let oid = match key {
            Some(key) => {
                // What `git commit -S` with gpg.format=ssh writes: an SSHSIG over the
                // commit in the "git" namespace, in the gpgsig header.
                let sig = key
                    .sign("git", HashAlg::Sha512, content.as_bytes())
                    .unwrap();
                let armored = sig.to_pem(LineEnding::LF).unwrap();
                self.repo.commit_signed(content, &armored, None).unwrap()
            }
            None => self
                .repo
                .odb()
                .unwrap()
                .write(git2::ObjectType::Commit, content.as_bytes())
                .unwrap(),
        };
        self.repo
            .reference("refs/heads/main", oid, true, message)
            .unwrap();
        self.repo.set_head("refs/heads/main").unwrap();
        oid
    }
}

/// The example SOC's resources (examples/soc: 22 DetectionRules, most of them SigmaHQ
/// rules, and two Sensors), moved into the test's namespace.
fn example_soc(repo: &Repo, namespace: &str) -> usize {
    let examples = kastell_kube_harness::repo_root().join("examples/soc");
    let in_namespace = |path: PathBuf| {
        std::fs::read_to_string(path)
            .unwrap()
            .replace("namespace: soc\n", &format!("namespace: {namespace}\n"))
    };
    let mut rules = 0;
    for entry in std::fs::read_dir(examples.join("rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            repo.write(&format!("soc/rules/{name}"), &in_namespace(path));
            rules += 1;
        }
    }
    repo.write(
        "soc/sensors.yaml",
        &in_namespace(examples.join("sensors.yaml")),
    );
    // Outside the synced path: never applied.
    repo.write("README.md", "The SOC's resources live under soc/.\n");
    repo.write(
        "other/stray.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: stray}\n",
    );
    rules
}

async fn create_platform(env: &TestEnv, git: serde_json::Value) -> SecOpsPlatform {
    let platforms: Api<SecOpsPlatform> = env.api();
    let platform: SecOpsPlatform = serde_json::from_value(json!({
        "apiVersion": "kastell.eu/v1alpha1",
        "kind": "SecOpsPlatform",
        "metadata": {"name": "soc"},
        "spec": {"residency": {"jurisdiction": "EU"}, "git": git},
    }))
    .unwrap();
    platforms
        .create(&PostParams::default(), &platform)
        .await
        .expect("creating the platform")
}

fn git_status(platform: &SecOpsPlatform) -> kastell_crds::platform::GitSyncStatus {
    platform
        .status
        .as_ref()
        .and_then(|s| s.git.clone())
        .unwrap_or_default()
}

async fn wait_revision(env: &TestEnv, commit: Oid) -> SecOpsPlatform {
    let platforms: Api<SecOpsPlatform> = env.api();
    let wanted = commit.to_string();
    eventually(&format!("status.git.revision {wanted}"), || async {
        let p = platforms.get("soc").await.map_err(|e| e.to_string())?;
        let git = git_status(&p);
        if git.revision.as_deref() == Some(wanted.as_str()) && git.last_error.is_none() {
            Ok(p)
        } else {
            Err(format!("{git:?}"))
        }
    })
    .await
}

async fn wait_error(env: &TestEnv, needle: &str) -> SecOpsPlatform {
    let platforms: Api<SecOpsPlatform> = env.api();
    eventually(&format!("status.git.lastError with {needle:?}"), || async {
        let p = platforms.get("soc").await.map_err(|e| e.to_string())?;
        let git = git_status(&p);
        match &git.last_error {
            Some(error) if error.contains(needle) => Ok(p),
            _ => Err(format!("{git:?}")),
        }
    })
    .await
}

async fn names<K>(api: &Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut names: Vec<String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

const SSH_RULE: &str = "sigmahq-lnx-sshd-susp-ssh";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_is_applied_pruned_force_pushed_and_drift_corrected() {
    let Some(env) = setup("a_repository_is_applied_pruned_force_pushed_and_drift_corrected").await
    else {
        return;
    };
    let repo = Repo::new();
    let rule_count = example_soc(&repo, env.namespace());
    let c1 = repo.commit("the example SOC", None, None);
    let _operator = start_operator(&env, "gitsync-test");
    create_platform(
        &env,
        json!({"url": repo.url(), "branch": "main", "path": "soc", "interval": "5s"}),
    )
    .await;

    let platform = wait_revision(&env, c1).await;
    let git = git_status(&platform);
    assert_eq!(git.resources, Some(rule_count as u32 + 2));
    assert!(git.applied_at.is_some());
    let rules: Api<DetectionRule> = env.api();
    let sensors: Api<Sensor> = env.api();
    assert_eq!(names(&rules).await.len(), rule_count);
    assert_eq!(names(&sensors).await, ["suricata-dmz", "wazuh-manager"]);
    let rule = rules.get(SSH_RULE).await.unwrap();
    let annotations = rule.annotations();
    assert_eq!(annotations["kastell.eu/source-commit"], c1.to_string());
    assert_eq!(
        annotations["kastell.eu/source-path"],
        format!("soc/rules/{SSH_RULE}.yaml")
    );
    assert_eq!(
        annotations["kastell.eu/commit-author"],
        format!("{AUTHOR} <{EMAIL}>")
    );
    assert_eq!(rule.labels()["kastell.eu/synced-by"], "soc");
    let source = rule.status.as_ref().and_then(|s| s.common.source.clone());
    let source = source.expect("status.source written");
    assert_eq!(source.commit, Some(c1.to_string()));
    assert_eq!(source.repository, Some(repo.url()));
    let secrets: Api<Secret> = env.api();
    assert!(secrets.get_opt("stray").await.unwrap().is_none());
    let inventory: Api<ConfigMap> = env.api();
    let inventory = inventory.get("soc-git-inventory").await.unwrap();
    let lines = inventory.data.unwrap()["inventory"].lines().count();
    assert_eq!(lines, rule_count + 2);

    // A removed file: its resources are pruned, the rest stays.
    repo.remove("soc/sensors.yaml");
    let c2 = repo.commit("drop the sensors", Some(c1), None);
    wait_revision(&env, c2).await;
    assert!(names(&sensors).await.is_empty());
    assert_eq!(names(&rules).await.len(), rule_count);

    // Drift: a field changed by someone else is taken back, a deleted rule re-created.
    let original = rules.get(SSH_RULE).await.unwrap().spec.sigma;
    rules
        .patch(
            SSH_RULE,
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "kastell.eu/v1alpha1", "kind": "DetectionRule",
                "metadata": {"name": SSH_RULE},
                "spec": {"sigma": "title: hand-edited\n"},
            })),
        )
        .await
        .expect("editing the rule by hand");
    let deleted = "sigmahq-lnx-sshd-exploit-cve-2018-15473";
    rules
        .delete(deleted, &DeleteParams::default())
        .await
        .expect("deleting a rule by hand");
    eventually("the hand edit taken back", || async {
        let r = rules.get(SSH_RULE).await.map_err(|e| e.to_string())?;
        (r.spec.sigma == original).then_some(()).ok_or(r.spec.sigma)
    })
    .await;
    eventually("the deleted rule re-created", || async {
        rules
            .get_opt(deleted)
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "absent".to_owned())
    })
    .await;

    // A force push rewrites main from c1: c2 is gone from the branch, one sensor comes
    // back, one rule file is removed.
    repo.write(
        "soc/sensors.yaml",
        &format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {{name: suricata-dmz, \
             namespace: {}}}\nspec:\n  format: suricata-eve\n  transport: {{type: file, path: \
             data/suricata/eve.json}}\n",
            env.namespace()
        ),
    );
    repo.remove(&format!("soc/rules/{deleted}.yaml"));
    let c3 = repo.commit("rewritten history", Some(c1), None);
    wait_revision(&env, c3).await;
    assert_eq!(names(&sensors).await, ["suricata-dmz"]);
    assert!(rules.get_opt(deleted).await.unwrap().is_none());
    let rule = rules.get(SSH_RULE).await.unwrap();
    assert_eq!(
        rule.annotations()["kastell.eu/source-commit"],
        c3.to_string()
    );
    let source = rule
        .status
        .and_then(|s| s.common.source)
        .unwrap_or_default();
    assert_eq!(source.commit, Some(c3.to_string()));
}

fn signing_key(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_foreign_signed_commits_are_refused_when_signatures_are_required() {
    let Some(env) = setup("unsigned_and_foreign_signed_commits_are_refused").await else {
        return;
    };
    let (ours, theirs) = (signing_key(7), signing_key(8));
    let repo = Repo::new();
    example_soc(&repo, env.namespace());
    let c1 = repo.commit("signed", None, Some(&ours));
    let _operator = start_operator(&env, "gitsync-test");
    let signer = format!("{EMAIL} {}", ours.public_key().to_openssh().unwrap());
    create_platform(
        &env,
        json!({"url": repo.url(), "branch": "main", "path": "soc", "interval": "5s",
               "allowedSigners": [signer]}),
    )
    .await;
    wait_revision(&env, c1).await;

    let sensors: Api<Sensor> = env.api();
    repo.remove("soc/sensors.yaml");
    let c2 = repo.commit("unsigned", Some(c1), None);
    let refused = wait_error(&env, "is not signed").await;
    let git = git_status(&refused);
    assert_eq!(git.revision, Some(c1.to_string()));
    assert!(
        git.last_error.as_deref().unwrap().contains(&c2.to_string()),
        "{git:?}"
    );
    // Nothing of the refused commit was applied: the sensors it removes are still there.
    assert_eq!(names(&sensors).await.len(), 2);

    repo.commit("signed by someone else", Some(c2), Some(&theirs));
    let refused = wait_error(&env, "not in spec.git.allowedSigners").await;
    assert_eq!(git_status(&refused).revision, Some(c1.to_string()));
    assert_eq!(names(&sensors).await.len(), 2);

    let events: Api<Event> = env.api();
    eventually("a GitSyncFailed event", || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| e.reason.as_deref() == Some("GitSyncFailed"))
            .map(|_| ())
            .ok_or_else(|| format!("{} events, none GitSyncFailed", list.items.len()))
    })
    .await;

    let c4 = repo.commit("signed again", Some(c2), Some(&ours));
    wait_revision(&env, c4).await;
    assert!(names(&sensors).await.is_empty());
}

fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn serve_webhook(syncer: Arc<Syncer>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = gitsync::webhook::router(syncer);
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_push_webhook_syncs_at_once() {
    let Some(env) = setup("an_authenticated_push_webhook_syncs_at_once").await else {
        return;
    };
    let secret = b"4f1c0e-webhook-shared-secret";
    let secrets: Api<Secret> = env.api();
    let hook_secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "soc-git-webhook"},
        "stringData": {"token": std::str::from_utf8(secret).unwrap()},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &hook_secret)
        .await
        .unwrap();
    let repo = Repo::new();
    example_soc(&repo, env.namespace());
    let c1 = repo.commit("first", None, None);
    let operator = start_operator(&env, "gitsync-test");
    let (base, server) = serve_webhook(operator.syncer.clone()).await;
    // An hour: only the webhook can bring the second commit in within the test.
    create_platform(
        &env,
        json!({"url": repo.url(), "branch": "main", "path": "soc", "interval": "1h",
               "webhookSecret": "soc-git-webhook"}),
    )
    .await;
    wait_revision(&env, c1).await;

    repo.remove("soc/sensors.yaml");
    let c2 = repo.commit("second", Some(c1), None);
    let url = format!("{base}/hooks/git/{}/soc", env.namespace());
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{c2}"}}"#);
    let http = reqwest::Client::new();

    let forged = http
        .post(&url)
        .header("X-GitHub-Event", "push")
        .header(
            "X-Hub-Signature-256",
            github_signature(b"guess", body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let unknown = http
        .post(format!("{base}/hooks/git/{}/nope", env.namespace()))
        .header("X-GitHub-Event", "push")
        .header(
            "X-Hub-Signature-256",
            github_signature(secret, body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let accepted = http
        .post(&url)
        .header("X-GitHub-Event", "push")
        .header(
            "X-Hub-Signature-256",
            github_signature(secret, body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    wait_revision(&env, c2).await;
    let sensors: Api<Sensor> = env.api();
    assert!(names(&sensors).await.is_empty());

    // GitLab's shared token triggers the same way.
    repo.write(
        "soc/sensors.yaml",
        &std::fs::read_to_string(
            kastell_kube_harness::repo_root().join("examples/soc/sensors.yaml"),
        )
        .unwrap()
        .replace(
            "namespace: soc\n",
            &format!("namespace: {}\n", env.namespace()),
        ),
    );
    let c3 = repo.commit("third", Some(c2), None);
    let gitlab = http
        .post(&url)
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", std::str::from_utf8(secret).unwrap())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(gitlab.status(), 202);
    wait_revision(&env, c3).await;
    assert_eq!(names(&sensors).await.len(), 2);
    server.abort();
}

/// Interoperability with git itself: a commit signed by `git commit -S` (gpg.format=ssh,
/// through ssh-keygen) is fetched by the sync and verified against its allowed signer,
/// and the same commit is refused for another key. No API server needed.
#[test]
fn a_commit_signed_by_git_and_ssh_keygen_verifies() {
    use kastell_operator::gitsync::fetch::{fetch, Credentials};
    use kastell_operator::gitsync::verify::{AllowedSigners, SignatureError};
    use std::process::Command;

    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    if !have("git") || Command::new("ssh-keygen").arg("-?").output().is_err() {
        eprintln!(
            "SKIPPED: a_commit_signed_by_git_and_ssh_keygen_verifies: git or ssh-keygen absent"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", EMAIL, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let work = dir.path().join("repo");
    std::fs::create_dir_all(work.join("soc")).unwrap();
    std::fs::copy(
        kastell_kube_harness::repo_root().join("examples/soc/sensors.yaml"),
        work.join("soc/sensors.yaml"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .current_dir(&work)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args([
                "-c",
                &format!("user.name={AUTHOR}"),
                "-c",
                &format!("user.email={EMAIL}"),
            ])
            .args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("user.signingkey={}", key.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-S", "-m", "signed by git"]);
    let head = git(&["rev-parse", "HEAD"]).trim().to_owned();

    let source: kastell_crds::platform::GitSource = serde_json::from_value(json!({
        "url": format!("file://{}", work.display()), "branch": "main", "path": "soc",
    }))
    .unwrap();
    let snapshot = fetch(&dir.path().join("cache"), &source, &Credentials::default()).unwrap();
    assert_eq!(snapshot.commit, head);
    assert_eq!(snapshot.documents.len(), 2);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let signers = AllowedSigners::parse(&[format!("{EMAIL} {public}")]).unwrap();
    let fingerprint = signers
        .verify(&snapshot.commit, snapshot.signature.as_ref())
        .unwrap();
    assert!(fingerprint.starts_with("SHA256:"));
    let other = signing_key(9).public_key().to_openssh().unwrap();
    let others = AllowedSigners::parse(&[other]).unwrap();
    assert!(matches!(
        others.verify(&snapshot.commit, snapshot.signature.as_ref()),
        Err(SignatureError::NotAllowed { .. })
    ));
}

/// Removes `spec.git` from the platform `soc`.
async fn remove_git(env: &TestEnv) {
    let platforms: Api<SecOpsPlatform> = env.api();
    platforms
        .patch(
            "soc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"git": null}})),
        )
        .await
        .expect("removing spec.git");
}

async fn wait_released(env: &TestEnv) {
    let platforms: Api<SecOpsPlatform> = env.api();
    let inventories: Api<ConfigMap> = env.api();
    eventually("the inventory and status.git gone", || async {
        let p = platforms.get("soc").await.map_err(|e| e.to_string())?;
        let inventory = inventories
            .get_opt("soc-git-inventory")
            .await
            .map_err(|e| e.to_string())?;
        let git = p.status.as_ref().and_then(|s| s.git.clone());
        if inventory.is_none() && git.is_none() {
            Ok(())
        } else {
            Err(format!(
                "inventory {}, status.git {git:?}",
                inventory.is_some()
            ))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_spec_git_prunes_what_the_sync_applied_unless_told_to_keep_it() {
    let Some(env) = setup("removing_spec_git_prunes_what_the_sync_applied").await else {
        return;
    };
    let repo = Repo::new();
    let rule_count = example_soc(&repo, env.namespace());
    let c1 = repo.commit("the example SOC", None, None);
    let _operator = start_operator(&env, "gitsync-test");
    let rules: Api<DetectionRule> = env.api();
    let sensors: Api<Sensor> = env.api();
    create_platform(
        &env,
        json!({"url": repo.url(), "branch": "main", "path": "soc", "interval": "5s"}),
    )
    .await;
    wait_revision(&env, c1).await;
    assert_eq!(names(&rules).await.len(), rule_count);
    // A rule applied by hand, beside the synced ones, is not the sync's to delete.
    rules
        .create(
            &PostParams::default(),
            &serde_yaml::from_str(
                "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\n\
                 metadata: {name: by-hand}\nspec:\n  sigma: |\n    title: by hand\n    \
                 logsource: {product: linux}\n    detection:\n      sel: {a: b}\n      \
                 condition: sel\n",
            )
            .unwrap(),
        )
        .await
        .unwrap();

    // The default: removing spec.git deletes what the sync applied, and only that.
    remove_git(&env).await;
    wait_released(&env).await;
    assert_eq!(names(&rules).await, ["by-hand"]);
    assert!(names(&sensors).await.is_empty());

    // pruneOnRemoval: false leaves the resources in place, untracked, with their
    // provenance.
    let platforms: Api<SecOpsPlatform> = env.api();
    platforms
        .patch(
            "soc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"git": {
                "url": repo.url(), "branch": "main", "path": "soc", "interval": "5s",
                "pruneOnRemoval": false,
            }}})),
        )
        .await
        .unwrap();
    wait_revision(&env, c1).await;
    remove_git(&env).await;
    wait_released(&env).await;
    assert_eq!(names(&rules).await.len(), rule_count + 1);
    assert_eq!(names(&sensors).await, ["suricata-dmz", "wazuh-manager"]);
    let rule = rules.get(SSH_RULE).await.unwrap();
    assert_eq!(
        rule.annotations()["kastell.eu/source-commit"],
        c1.to_string()
    );
}

/// Runs gpg in its own home; panics with its output when it fails.
fn gpg(home: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let output = std::process::Command::new("gpg")
        .env("GNUPGHOME", home)
        .args([
            "--batch",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "gpg {args:?}: {output:?}");
    output.stdout
}

/// A new signing key in a fresh GNUPGHOME; returns the home and the key's armored public
/// key.
fn gpg_key(dir: &std::path::Path, name: &str, algorithm: &str) -> (PathBuf, String) {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let uid = format!("{name} <{name}@soc.example.eu>");
    gpg(
        &home,
        &["--quick-gen-key", &uid, algorithm, "sign", "never"],
    );
    let public = String::from_utf8(gpg(&home, &["--armor", "--export", &uid])).unwrap();
    (home, public)
}

#[test]
fn a_commit_signed_by_git_and_gpg_verifies_against_its_armored_key() {
    use kastell_operator::gitsync::fetch::{fetch, Credentials};
    use kastell_operator::gitsync::verify::{AllowedSigners, SignatureError};
    use std::process::Command;

    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    if !have("git") || !have("gpg") {
        eprintln!(
            "SKIPPED: a_commit_signed_by_git_and_gpg_verifies_against_its_armored_key: git or \
             gpg absent"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ada, ada_public) = gpg_key(dir.path(), "ada", "ed25519");
    let (_rsa_home, rsa_public) = gpg_key(dir.path(), "grace", "rsa3072");
    let (_mallory, mallory_public) = gpg_key(dir.path(), "mallory", "ed25519");

    let work = dir.path().join("repo");
    std::fs::create_dir_all(work.join("soc")).unwrap();
    std::fs::copy(
        kastell_kube_harness::repo_root().join("examples/soc/sensors.yaml"),
        work.join("soc/sensors.yaml"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .current_dir(&work)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GNUPGHOME", &ada)
            .args(["-c", "user.name=ada", "-c", "user.email=ada@soc.example.eu"])
            .args(["-c", "user.signingkey=ada@soc.example.eu"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-S", "-m", "signed by gpg"]);
    let head = git(&["rev-parse", "HEAD"]).trim().to_owned();

    let source: kastell_crds::platform::GitSource = serde_json::from_value(json!({
        "url": format!("file://{}", work.display()), "branch": "main", "path": "soc",
    }))
    .unwrap();
    let snapshot = fetch(&dir.path().join("cache"), &source, &Credentials::default()).unwrap();
    assert_eq!(snapshot.commit, head);
    let signature = snapshot.signature.as_ref();
    assert!(signature.unwrap().0.contains("BEGIN PGP SIGNATURE"));

    // Among other allowed keys (an SSH key, an RSA OpenPGP key), ada's verifies.
    let ssh = signing_key(9).public_key().to_openssh().unwrap();
    let signers =
        AllowedSigners::parse(&[ssh.clone(), rsa_public.clone(), ada_public.clone()]).unwrap();
    let fingerprint = signers.verify(&snapshot.commit, signature).unwrap();
    let listed = String::from_utf8(gpg(&ada, &["--with-colons", "--fingerprint"])).unwrap();
    assert!(
        listed.contains(&format!(":{fingerprint}:")),
        "{fingerprint} not in {listed}"
    );

    // Only other keys allowed: refused, naming the signer.
    let others = AllowedSigners::parse(&[rsa_public, mallory_public]).unwrap();
    assert!(matches!(
        others.verify(&snapshot.commit, signature),
        Err(SignatureError::NotAllowed { .. })
    ));
    // No OpenPGP key at all: refused as GPG.
    let ssh_only = AllowedSigners::parse(&[ssh]).unwrap();
    assert!(matches!(
        ssh_only.verify(&snapshot.commit, signature),
        Err(SignatureError::Gpg { .. })
    ));
    // The signature over other content: invalid.
    let (armored, signed) = signature.unwrap().clone();
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("signed by gpg", "signed by gpg, honestly");
    let ada_only = AllowedSigners::parse(&[ada_public]).unwrap();
    assert!(matches!(
        ada_only.verify(&snapshot.commit, Some(&(armored, tampered.into_bytes()))),
        Err(SignatureError::Invalid { .. })
    ));

    for home in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if home.file_name().to_string_lossy().starts_with("gnupg-") {
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", home.path())
                .args(["--kill", "gpg-agent"])
                .status();
        }
    }
}

/// Runs gpg with `input` on its standard input (answers to `--command-fd 0`).
fn gpg_with_input(home: &std::path::Path, args: &[&str], input: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(["--command-fd", "0"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "gpg {args:?}: {output:?}");
    output.stdout
}

fn gpg_home(dir: &std::path::Path, name: &str) -> PathBuf {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    home
}

/// A detached armored signature of `data` by `uid`, as `git commit -S` makes it
/// (`gpg -bsau`), made at `time` (gpg's `--faked-system-time`) when given.
fn gpg_sign(home: &std::path::Path, uid: &str, data: &[u8], time: Option<&str>) -> String {
    let file = home.join("payload");
    std::fs::write(&file, data).unwrap();
    let mut args = Vec::new();
    if let Some(time) = time {
        args.extend(["--faked-system-time", time]);
    }
    let path = file.to_str().unwrap();
    args.extend(["-u", uid, "--armor", "--detach-sign", "-o", "-", path]);
    String::from_utf8(gpg(home, &args)).unwrap()
}

fn gpg_fingerprint(home: &std::path::Path, uid: &str) -> String {
    let listed = String::from_utf8(gpg(home, &["--with-colons", "--fingerprint", uid])).unwrap();
    listed
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .map(|rest| rest.trim_matches(':').to_owned())
        .unwrap()
}

#[test]
fn commits_signed_by_expired_or_revoked_gpg_keys_are_refused() {
    use kastell_operator::gitsync::verify::{AllowedSigners, SignatureError};

    if std::process::Command::new("gpg")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: commits_signed_by_expired_or_revoked_gpg_keys_are_refused: no gpg");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // What git signs: the commit object without its gpgsig header.
    let payload = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
        author Ada <ada@soc.example.eu> 1577858400 +0000\n\
        committer Ada <ada@soc.example.eu> 1577858400 +0000\n\nrules for 2020\n";
    let signed = |armored: String| Some((armored, payload.to_vec()));
    let at = |time: &str| chrono::DateTime::parse_from_rfc3339(time).unwrap().to_utc();

    // A key made on 2020-01-01 for one day, and a signature made within that day: valid
    // then, refused now.
    let old = gpg_home(dir.path(), "old");
    let uid = "old <old@soc.example.eu>";
    gpg(
        &old,
        &[
            "--faked-system-time",
            "20200101T000000!",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "1d",
        ],
    );
    let signature = gpg_sign(&old, uid, payload, Some("20200101T060000!"));
    let public = String::from_utf8(gpg(&old, &["--armor", "--export", uid])).unwrap();
    let signers = AllowedSigners::parse(&[public]).unwrap();
    signers
        .verify_at(
            "c1",
            signed(signature.clone()).as_ref(),
            at("2020-01-01T12:00:00Z"),
        )
        .expect("valid while the key was");
    let refused = signers.verify("c1", signed(signature.clone()).as_ref());
    assert!(
        matches!(&refused, Err(SignatureError::Expired { expired, .. }) if expired == "2020-01-02T00:00:00Z"),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().to_string().contains("expired at"));

    // The key's expiry removed by a newer self-signature (`--quick-set-expire ... never`):
    // the newest self-signature counts, so the same signature verifies now.
    let fingerprint = gpg_fingerprint(&old, uid);
    gpg(&old, &["--quick-set-expire", &fingerprint, "never"]);
    let extended = String::from_utf8(gpg(&old, &["--armor", "--export", uid])).unwrap();
    AllowedSigners::parse(&[extended])
        .unwrap()
        .verify("c1", signed(signature).as_ref())
        .expect("no expiry any more");

    // A current key that verifies, then its revocation certificate (the one gpg writes to
    // openpgp-revocs.d when it makes a key) imported: refused.
    let (ada, ada_public) = gpg_key(dir.path(), "ada", "ed25519");
    let signature = gpg_sign(&ada, "ada@soc.example.eu", payload, None);
    AllowedSigners::parse(&[ada_public])
        .unwrap()
        .verify("c2", signed(signature.clone()).as_ref())
        .expect("ada's key is good");
    let ada_fingerprint = gpg_fingerprint(&ada, "ada@soc.example.eu");
    let certificate = std::fs::read_to_string(
        ada.join("openpgp-revocs.d")
            .join(format!("{ada_fingerprint}.rev")),
    )
    .unwrap()
    // gpg guards the block with a leading colon against an accidental import.
    .replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    );
    std::fs::write(ada.join("revocation.asc"), certificate).unwrap();
    gpg(
        &ada,
        &["--import", ada.join("revocation.asc").to_str().unwrap()],
    );
    let revoked =
        String::from_utf8(gpg(&ada, &["--armor", "--export", "ada@soc.example.eu"])).unwrap();
    let refused = AllowedSigners::parse(&[revoked])
        .unwrap()
        .verify("c2", signed(signature).as_ref());
    assert!(
        matches!(&refused, Err(SignatureError::Revoked { reason, .. }) if reason.starts_with("the key is revoked")),
        "{refused:?}"
    );

    // A certify-only primary key with a signing subkey that signs, then the subkey revoked
    // with `gpg --edit-key` (reason 1, superseded): refused, naming the subkey.
    let sub = gpg_home(dir.path(), "sub");
    let uid = "grace <grace@soc.example.eu>";
    gpg(&sub, &["--quick-gen-key", uid, "ed25519", "cert", "never"]);
    let primary = gpg_fingerprint(&sub, uid);
    gpg(
        &sub,
        &["--quick-add-key", &primary, "ed25519", "sign", "never"],
    );
    let signature = gpg_sign(&sub, uid, payload, None);
    let public = String::from_utf8(gpg(&sub, &["--armor", "--export", uid])).unwrap();
    let subkey = AllowedSigners::parse(&[public])
        .unwrap()
        .verify("c3", signed(signature.clone()).as_ref())
        .expect("the signing subkey is good");
    assert_ne!(subkey, primary, "signed by the subkey, not the primary key");
    gpg_with_input(
        &sub,
        &["--edit-key", &primary],
        "key 1\nrevkey\ny\n1\nrotated to a new key\n\ny\nsave\n",
    );
    let public = String::from_utf8(gpg(&sub, &["--armor", "--export", uid])).unwrap();
    let refused = AllowedSigners::parse(&[public])
        .unwrap()
        .verify("c3", signed(signature).as_ref());
    match &refused {
        Err(SignatureError::Revoked {
            fingerprint,
            reason,
            ..
        }) => {
            assert_eq!(*fingerprint, subkey);
            assert!(reason.contains("signing subkey"), "{reason}");
            assert!(reason.contains("rotated to a new key"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // A key certified by another key (what a key-signing leaves in `gpg --export`): the
    // other key's certification is not a self-signature and does not make the key unreadable.
    let web = gpg_home(dir.path(), "web");
    let (alice, bob) = ("alice <alice@soc.example.eu>", "bob <bob@soc.example.eu>");
    gpg(
        &web,
        &["--quick-gen-key", alice, "ed25519", "sign", "never"],
    );
    gpg(&web, &["--quick-gen-key", bob, "ed25519", "sign", "never"]);
    let alice_fingerprint = gpg_fingerprint(&web, alice);
    gpg(
        &web,
        &[
            "-u",
            "bob@soc.example.eu",
            "--quick-sign-key",
            &alice_fingerprint,
        ],
    );
    let certified = String::from_utf8(gpg(&web, &["--armor", "--export", alice])).unwrap();
    let signature = gpg_sign(&web, "alice@soc.example.eu", payload, None);
    let verified = AllowedSigners::parse(&[certified])
        .expect("a key with another key's certification")
        .verify("c4", signed(signature).as_ref())
        .unwrap();
    assert_eq!(verified, alice_fingerprint);

    for home in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let _ = std::process::Command::new("gpgconf")
            .env("GNUPGHOME", home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}
