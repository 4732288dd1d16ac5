//! The admin socket's requests, answered from the server's parts: one
//! module per command group, each answering with the typed [`Answer`] the
//! CLI decodes.

mod cluster;
mod dmarc;
mod explain;
mod own;
mod policy;
mod queue;
mod received;
mod refused;
mod screen;
mod tlsrpt;

use crate::reload::Reloader;
use crate::state::{
    DmarcAccess, OwnAccess, PolicyAccess, QueueAccess, ScreenAccess, ServerInfo, TlsRptAccess,
};
use portcullis_admin::{
    Answer, Handler, ListenerStatus, ReloadReport, Request, Response, StatusReport,
};
use portcullis_inbound::InboundMetrics;
use refused::Refused;
use std::sync::Arc;

/// Answers admin requests.
pub struct AdminHandler {
    /// The process, for `status`.
    pub info: ServerInfo,
    /// The inbound counters (open sessions, for `status`).
    pub sessions: Arc<InboundMetrics>,
    /// `queue ...`.
    pub queue: QueueAccess,
    /// `policy ...`.
    pub policy: PolicyAccess,
    /// `tlsrpt ...`.
    pub tlsrpt: TlsRptAccess,
    /// `reload` (the same reload as SIGHUP).
    pub reload: Arc<Reloader>,
    /// `screen ...`.
    pub screen: ScreenAccess,
    /// `policy own`.
    pub own: OwnAccess,
    /// `dmarc ...`.
    pub dmarc: DmarcAccess,
    /// `cluster ...` and the cluster block of `status`; `None` without
    /// `[cluster]`.
    pub cluster: Option<portcullis_cluster::Cluster>,
}

impl AdminHandler {
    async fn status(&self) -> StatusReport {
        let s = &self.info;
        let cluster = match &self.cluster {
            Some(c) => Some(cluster::show(c).await),
            None => None,
        };
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: s.hostname.clone(),
            uptime_secs: s.started.elapsed().as_secs(),
            listeners: s
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    address: l.local_addr.to_string(),
                    role: l.role.as_str().into(),
                    certificate_not_after: s.certificates.not_after(l.local_addr),
                })
                .collect(),
            open_sessions: self.sessions.open_sessions(),
            queue_size: self.queue.queue.len(),
            data_dir: s.data_dir.display().to_string(),
            cluster,
        }
    }

    /// The answer to `req`, or why it is refused.
    async fn answer(&self, req: Request) -> Result<Answer, Refused> {
        let (q, p, t) = (&self.queue, &self.policy, &self.tlsrpt);
        Ok(match req {
            Request::Status => Answer::Status(self.status().await),
            Request::QueueList => Answer::QueueList(q.list()?),
            Request::QueueShow { id } => Answer::QueueShow(Box::new(q.show(&id)?)),
            Request::QueueRetry { id } => Answer::QueueRetry(q.retry(id.as_deref()).await?),
            Request::QueueDelete { id, bounce } => {
                Answer::QueueDelete(q.delete(&id, bounce).await?)
            }
            Request::PolicyList => Answer::PolicyList(p.list().await?),
            Request::PolicyShow { domain } => Answer::PolicyShow(Box::new(p.show(&domain).await?)),
            Request::PolicyFetch { domain } => {
                Answer::PolicyFetch(Box::new(p.fetch(&domain).await?))
            }
            Request::PolicyRefresh { domain } => {
                Answer::PolicyRefresh(p.refresh(domain.as_deref()).await?)
            }
            Request::PolicyEvict { domain } => Answer::PolicyEvict(p.evict(&domain).await?),
            Request::PolicyExplain { domain } => {
                Answer::PolicyExplain(Box::new(p.explain(&domain).await?))
            }
            Request::PolicyPin {
                domain,
                mode,
                mx,
                until,
                reason,
            } => Answer::PolicyPin(Box::new(p.pin(&domain, &mode, &mx, until, &reason).await?)),
            Request::PolicyOwn { domain } => {
                let config = self.reload.config();
                Answer::PolicyOwn(self.own.check(&config, domain.as_deref()).await?)
            }
            Request::PolicyUnpin { domain } => Answer::PolicyUnpin(p.unpin(&domain).await?),
            Request::TlsrptList => Answer::TlsrptList(t.list().await?),
            Request::TlsrptShow { domain, day } => {
                Answer::TlsrptShow(t.show(&domain, day.as_deref()).await?)
            }
            Request::TlsrptSend => Answer::TlsrptSend(t.send().await?),
            Request::TlsrptReceivedList { domain, since } => {
                Answer::TlsrptReceivedList(t.received_list(domain.as_deref(), since.as_deref())?)
            }
            Request::TlsrptReceivedShow { id } => {
                Answer::TlsrptReceivedShow(Box::new(t.received_show(&id)?))
            }
            Request::DmarcList => Answer::DmarcList(self.dmarc.list().await?),
            Request::DmarcSend => Answer::DmarcSend(self.dmarc.send().await?),
            Request::ClusterMigrate => {
                Answer::ClusterMigrate(cluster::migrate(self.cluster.as_ref()).await?)
            }
            Request::Reload => Answer::Reload(self.reload().await?),
            Request::ScreenShow { ip } => Answer::ScreenShow(Box::new(self.screen.show(ip).await)),
            Request::ScreenClear { target } => {
                Answer::ScreenClear(self.screen.clear(target).await?)
            }
        })
    }

    /// `reload`: off the async workers (file reads, key parsing); a bad
    /// file is refused with its errors, the config in force stays.
    async fn reload(&self) -> Result<ReloadReport, Refused> {
        let reloader = self.reload.clone();
        match tokio::task::spawn_blocking(move || reloader.reload("admin")).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(reason)) => Err(Response::error(reason)),
            Err(e) => Err(Response::error(format!("reload did not finish: {e}"))),
        }
    }
}

impl Handler for AdminHandler {
    async fn handle(&self, req: Request) -> Response {
        match self.answer(req).await {
            Ok(answer) => answer.into(),
            Err(refused) => refused,
        }
    }
}
