//! The connection to a node's admin API: one channel, the bearer token on every request, a
//! deadline on every unary call, and every failure turned into a [`CliError`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::admin::v1::{
    cluster_client::ClusterClient, runs_client::RunsClient, sources_client::SourcesClient,
    syncs_client::SyncsClient, tenants_client::TenantsClient,
};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

use super::error::{CallContext, CliError, ExitKind};

/// How long to wait for the TCP (and HTTP/2) connection before calling the node unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the token comes from: `--token-file`, else `FERRY_TOKEN`. There is deliberately no
/// `--token` flag: a token on the command line is visible to every user in `ps` and stays in
/// shell history.
pub fn read_token(token_file: Option<&PathBuf>) -> Result<Option<String>, CliError> {
    let token = match token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("--token-file {}: {e}", path.display())))?;
            Some(text.trim().to_owned())
        }
        None => std::env::var("FERRY_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned()),
    };
    Ok(token.filter(|t| !t.is_empty()))
}

pub struct Client {
    channel: Channel,
    auth: Option<MetadataValue<tonic::metadata::Ascii>>,
    pub ctx: CallContext,
}

impl Client {
    pub fn connect(
        endpoint: &str,
        token: Option<String>,
        timeout: Duration,
        ca_cert: Option<&Path>,
    ) -> Result<Self, CliError> {
        let ctx = CallContext {
            endpoint: endpoint.to_owned(),
            token_given: token.is_some(),
            timeout,
        };
        let auth = match token {
            Some(t) => Some(
                MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    CliError::new(
                        ExitKind::Usage,
                        "the token has characters that cannot go in a header (check FERRY_TOKEN or the token file)",
                    )
                })?,
            ),
            None => None,
        };
        let mut ep = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| CliError::usage(format!("--endpoint {endpoint}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .tcp_nodelay(true);
        if endpoint.starts_with("https://") {
            // The public web's roots, plus the CA given (a private CA of the cluster's ingress).
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(path) = ca_cert {
                let pem = std::fs::read(path).map_err(|e| {
                    CliError::usage(format!("--endpoint-ca-cert {}: {e}", path.display()))
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            ep = ep
                .tls_config(tls)
                .map_err(|e| CliError::usage(format!("--endpoint {endpoint}: TLS: {e}")))?;
        } else if ca_cert.is_some() {
            return Err(CliError::usage(format!(
                "--endpoint-ca-cert is for https:// endpoints; {endpoint} is plain HTTP"
            )));
        }
        // Connected on the first call, so a bad command line or file is reported before any
        // network error; a refused connection then comes back as UNAVAILABLE.
        let channel = ep.connect_lazy();
        Ok(Self { channel, auth, ctx })
    }

    /// A request carrying the token and, for unary calls, the deadline.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut req = self.stream_request(message);
        req.set_timeout(self.ctx.timeout);
        req
    }

    /// A request without a deadline (for streams that last as long as a run).
    pub fn stream_request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        if let Some(auth) = &self.auth {
            req.metadata_mut().insert("authorization", auth.clone());
        }
        req
    }

    /// Awaits a unary call within the timeout and maps its failure.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, CliError> {
        match tokio::time::timeout(self.ctx.timeout, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(self.ctx.status(&status)),
            Err(_) => Err(self.ctx.timed_out()),
        }
    }

    pub fn tenants(&self) -> TenantsClient<Channel> {
        TenantsClient::new(self.channel.clone())
    }

    pub fn sources(&self) -> SourcesClient<Channel> {
        SourcesClient::new(self.channel.clone())
    }

    pub fn syncs(&self) -> SyncsClient<Channel> {
        SyncsClient::new(self.channel.clone())
    }

    pub fn runs(&self) -> RunsClient<Channel> {
        RunsClient::new(self.channel.clone())
    }

    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }
}
