//! Leader election through a coordination.k8s.io Lease, so that of several operator
//! replicas exactly one reconciles.
//!
//! kube-runtime 5 has no elector, and the crates that add one (kube-leader-election,
//! kubert) follow older kube releases; the Lease protocol needed here is small: take the
//! Lease when it is free or expired, with the resourceVersion as the guard against a
//! competing replica, and renew it well inside its duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

/// Who competes for which Lease.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    /// This replica's identity, normally its pod name.
    pub identity: String,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election on Lease {namespace}/{lease}: {source}")]
    Api {
        namespace: String,
        lease: String,
        #[source]
        source: kube::Error,
    },
    #[error("lost the Lease {namespace}/{lease} to {holder}")]
    Lost {
        namespace: String,
        lease: String,
        holder: String,
    },
}

impl Election {
    fn api(&self, client: &Client) -> Api<Lease> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    fn error(&self) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        move |source| LeaderError::Api {
            namespace: self.namespace.clone(),
            lease: self.lease.clone(),
            source,
        }
    }

    /// Waits until this replica holds the Lease.
    ///
    /// # Errors
    ///
    /// When the API server refuses to read or write Leases (RBAC), never because another
    /// replica holds it.
    pub async fn acquire(&self, client: &Client) -> Result<(), LeaderError> {
        loop {
            if self.try_acquire(client).await? {
                tracing::info!(identity = %self.identity, lease = %self.lease, "leading");
                return Ok(());
            }
            tokio::time::sleep(self.duration / 2).await;
        }
    }

    /// Renews the Lease until it cannot; returns why it stopped leading. The caller exits
    /// then, so a replica that lost the Lease never reconciles beside the new leader.
    pub async fn keep(&self, client: &Client) -> LeaderError {
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire(client).await {
                Ok(true) => {}
                Ok(false) => {
                    return LeaderError::Lost {
                        namespace: self.namespace.clone(),
                        lease: self.lease.clone(),
                        holder: "another replica".into(),
                    }
                }
                Err(error) => return error,
            }
        }
    }

    async fn try_acquire(&self, client: &Client) -> Result<bool, LeaderError> {
        let api = self.api(client);
        let now = Timestamp::now();
        let Some(current) = api.get_opt(&self.lease).await.map_err(self.error())? else {
            let lease = self.lease_object(None, now, 0);
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(self.error()(e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours && !expired(&spec, now) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        let lease = self.lease_object(current.metadata.resource_version.clone(), now, transitions);
        let lease = Lease {
            spec: lease.spec.map(|s| LeaseSpec {
                acquire_time: acquired.or(s.acquire_time),
                ..s
            }),
            ..lease
        };
        match api
            .replace(&self.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote the Lease since we read it: they won this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.error()(e)),
        }
    }

    fn lease_object(
        &self,
        resource_version: Option<String>,
        now: Timestamp,
        transitions: i32,
    ) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.lease.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    self.duration.as_secs().try_into().unwrap_or(i32::MAX),
                ),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }
}

/// A Lease is free once its holder has not renewed it for its whole duration.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed
        .checked_add(duration)
        .map_or(true, |deadline| deadline < now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration() {
        let now = Timestamp::now();
        let spec = |ago: i64| LeaseSpec {
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(ago))),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec(5), now));
        assert!(expired(&spec(20), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
