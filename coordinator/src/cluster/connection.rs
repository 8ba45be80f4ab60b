//! Connecting to etcd, and what its errors mean to Ferry.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::store::StoreError;

/// Where etcd is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// Client URLs (`http://host:2379`), any member of the cluster.
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// The longest one read or write may take before it counts as unavailable. Long-lived
    /// calls (keep-alive streams, a campaign, watches) use a client without it.
    pub request_timeout: Duration,
}

impl EtcdSettings {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// A client whose every request gives up after `request_timeout`. Connecting is lazy: this
    /// succeeds while etcd is down, and requests fail until it is back.
    pub async fn connect(&self) -> Result<Client, StoreError> {
        self.connect_with(Some(self.request_timeout)).await
    }

    /// A client without a request timeout, for calls that wait by design (a campaign blocks
    /// until it wins; cancelling it on a timer would resign the candidate).
    pub async fn connect_for_waiting(&self) -> Result<Client, StoreError> {
        self.connect_with(None).await
    }

    async fn connect_with(&self, timeout: Option<Duration>) -> Result<Client, StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints given".into()));
        }
        // HTTP/2 pings notice a silent connection (a paused or partitioned server) in seconds
        // instead of the kernel's TCP timeout.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(timeout) = timeout {
            options = options.with_timeout(timeout);
        }
        Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(|e| store_error("connecting to etcd", e))
    }
}

/// gRPC status codes (they are part of the wire protocol) that mean "try again".
mod code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const UNAVAILABLE: i32 = 14;
}

/// Classifies an etcd error: anything that a later attempt may get past (no connection, a
/// timeout, a leader election inside etcd, a lease that ended and will be replaced) is
/// [`StoreError::Unavailable`]; the rest is a [`StoreError::Backend`] failure.
pub(crate) fn store_error(what: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let message = format!("{what}: {e}");
    match &e {
        E::GRpcStatus(status) => match i32::from(status.code()) {
            code::CANCELLED
            | code::UNKNOWN
            | code::DEADLINE_EXCEEDED
            | code::RESOURCE_EXHAUSTED
            | code::ABORTED
            | code::UNAVAILABLE => StoreError::Unavailable(message),
            // The node's lease expired (etcd was away too long): membership grants a new one.
            code::NOT_FOUND if status.message().contains("lease not found") => {
                StoreError::Unavailable(message)
            }
            _ => StoreError::Backend(message),
        },
        E::TransportError(_) | E::IoError(_) | E::LeaseKeepAliveError(_) | E::WatchError(_) => {
            StoreError::Unavailable(message)
        }
        E::InvalidArgs(_) | E::InvalidUri(_) => StoreError::Invalid(message),
        _ => StoreError::Backend(message),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A private etcd per test, and clients on it.

    use super::*;
    use ferry_tests::etcd::{etcd_available, TestEtcd};

    /// A running etcd and settings that reach it; `None` (said loudly) when etcd is missing.
    pub(crate) fn start() -> Option<(TestEtcd, EtcdSettings)> {
        if !etcd_available() {
            return None;
        }
        let etcd = TestEtcd::start().expect("starting a private etcd");
        let mut settings = EtcdSettings::new(etcd.endpoints());
        settings.request_timeout = Duration::from_secs(2);
        Some((etcd, settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::error::{Classify, ErrorClass};

    #[tokio::test]
    async fn a_stopped_etcd_is_unavailable_and_a_restarted_one_serves_the_same_client() {
        let Some((mut etcd, settings)) = testing::start() else {
            return;
        };
        let mut client = settings.connect().await.unwrap();
        client.put("/ferry/v1/probe", "1", None).await.unwrap();
        etcd.stop().unwrap();
        let e = client.get("/ferry/v1/probe", None).await.unwrap_err();
        let e = store_error("reading", e);
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Retryable);

        etcd.restart().unwrap();
        let mut value = None;
        // The channel reconnects on its own; the first request after the restart may still see
        // the old connection fail.
        for _ in 0..50 {
            if let Ok(resp) = client.get("/ferry/v1/probe", None).await {
                value = resp.kvs().first().map(|kv| kv.value().to_vec());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            value.as_deref(),
            Some(&b"1"[..]),
            "the data survived the restart"
        );
    }

    #[tokio::test]
    async fn no_endpoints_is_a_clear_error() {
        let Err(e) = EtcdSettings::new(Vec::<String>::new()).connect().await else {
            panic!("connected without endpoints");
        };
        assert!(e.to_string().contains("no etcd endpoints"), "{e}");
    }
}
