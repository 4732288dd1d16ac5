//! What the inbound service is built with from the config besides the
//! config itself: the sender verifier, the DKIM keys of submission and the
//! OAuth token introspector. Loaded at the start and again at each reload,
//! each checked when it is loaded, so a bad key or secret stops the start
//! or refuses the reload.

use anyhow::Context;
use portcullis_auth::Verifier;
use portcullis_config::Config;
use portcullis_dns::HickoryResolver;
use portcullis_inbound::{DkimSigners, InboundBuilder};
use portcullis_submission::oauth::Introspector;
use portcullis_types::SystemClock;
use std::sync::Arc;
use tracing::info;

/// The verifier, DKIM keys and introspector of one config.
pub struct InboundParts {
    /// `[verify]`; `None` when verification is off.
    pub verifier: Option<Arc<Verifier>>,
    /// `[[submission.dkim]]`.
    pub dkim: DkimSigners,
    /// `[submission.oauth]`; `None` when OAuth is not configured.
    pub oauth: Option<Arc<Introspector>>,
}

impl InboundParts {
    /// Loads the parts of `config`. `reuse` is a verifier built for the
    /// same `[verify]` and hostname (a reload that did not change them):
    /// it is kept with its thread pool instead of building another.
    pub fn load(
        config: &Config,
        resolver: &HickoryResolver,
        reuse: Option<Arc<Verifier>>,
    ) -> anyhow::Result<InboundParts> {
        // Sender verification shares the one resolver (and its cache):
        // mail-auth verifies through it, so `[dns]` governs every lookup.
        let verifier = match (config.verify.enabled, reuse) {
            (false, _) => None,
            (true, Some(v)) => Some(v),
            (true, None) => Some(Arc::new(
                Verifier::new(resolver, &config.hostname, config.verify.clone())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            )),
        };
        let dkim =
            DkimSigners::load(&config.submission.dkim).map_err(|e| anyhow::anyhow!("{e}"))?;
        let oauth = match &config.submission.oauth {
            Some(o) => Some(Arc::new(build_introspector(config, o, resolver)?)),
            None => None,
        };
        Ok(InboundParts {
            verifier,
            dkim,
            oauth,
        })
    }

    /// `builder` with these parts.
    pub fn apply<'a>(self, builder: InboundBuilder<'a>) -> InboundBuilder<'a> {
        let mut builder = builder.dkim(self.dkim);
        if let Some(verifier) = self.verifier {
            builder = builder.verifier(verifier);
        }
        if let Some(oauth) = self.oauth {
            builder = builder.oauth(oauth);
        }
        builder
    }
}

/// The token introspector of `[submission.oauth]`: the strict HTTPS client
/// of policy fetches (PKIX under the web roots, `[tls] extra_roots` and
/// the section's `ca_file`; TLS 1.2+; no redirects; names through `[dns]`)
/// and the client secret read from its file now, so a missing file stops
/// the start.
fn build_introspector(
    config: &Config,
    o: &portcullis_config::OAuth,
    resolver: &HickoryResolver,
) -> anyhow::Result<Introspector> {
    use portcullis_submission::oauth::IntrospectionSettings;
    let secret = std::fs::read_to_string(&o.client_secret_file).with_context(|| {
        format!(
            "reading [submission.oauth] client_secret_file {}",
            o.client_secret_file.display()
        )
    })?;
    let secret = secret.trim();
    if secret.is_empty() {
        anyhow::bail!(
            "[submission.oauth] client_secret_file {} is empty",
            o.client_secret_file.display()
        );
    }
    let mut roots = config.tls.extra_roots.clone();
    roots.extend(o.ca_file.iter().cloned());
    let tls = portcullis_tls::ClientTls::new(&roots)
        .context("loading trust anchors for [submission.oauth]")?;
    let client = portcullis_https::builder(
        resolver.clone(),
        concat!("portcullis-oauth/", env!("CARGO_PKG_VERSION")),
    )
    .tls(tls)
    .timeout(o.timeout)
    .build()
    .map_err(|e| anyhow::anyhow!("building the token introspection client: {e}"))?;
    let mut settings = IntrospectionSettings::new(&o.introspection_url, &o.client_id, secret);
    settings.required_scope = o.required_scope.clone();
    settings.username_claim = o.username_claim.clone();
    settings.cache_ttl = o.cache_ttl;
    settings.max_in_flight = o.max_in_flight as usize;
    settings.breaker = portcullis_submission::breaker::BreakerSettings {
        failures: o.breaker_failures,
        open_for: o.breaker_open,
    };
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("[submission.oauth]: {e}"))?;
    info!(endpoint = %o.introspection_url, "OAUTHBEARER and XOAUTH2 offered (token introspection)");
    Ok(Introspector::new(client, settings, Arc::new(SystemClock)))
}
