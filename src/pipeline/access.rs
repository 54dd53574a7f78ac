//! Who may do what: token checks for ingest and subscriptions, and the
//! audit trail of sensitive actions.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{IngestError, Pipeline, Receipt};
use crate::auth::{AuthError, Claims, Keys, Mode};
use crate::flow::Fidelity;
use crate::time::{Span, Timestamp};

/// Token verification settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The signing keys, by key id; several at once while keys rotate.
    pub keys: Vec<KeyConfig>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Span,
}

/// One signing key. Keep configurations with secrets out of logs and
/// repositories; a host usually fills `secret` from its secret store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id (`kid` in token headers).
    pub kid: String,
    /// The secret, at least 32 bytes of text. Never serialized back out
    /// (a configuration shown in an admin view carries no secret).
    #[serde(skip_serializing)]
    pub secret: String,
}

impl core::fmt::Debug for KeyConfig {
    /// The key id only.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyConfig").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// The verifier of these settings.
    pub fn keys(&self) -> Result<Keys, AuthError> {
        let mut keys = Keys::new().with_leeway(self.leeway);
        for k in &self.keys {
            keys.add(k.kid.clone(), k.secret.as_bytes())?;
        }
        Ok(keys)
    }
}

/// A sensitive action, for the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// Host time.
    pub at: Timestamp,
    /// The tenant concerned, when known.
    pub tenant: Option<String>,
    /// What happened.
    pub action: AuditAction,
}

/// What an [`AuditEvent`] records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// Tokens were refused (bad, expired, unknown key, …): refusals in a
    /// row with the same reason are one event with a count, so a flood of
    /// bad tokens cannot push other events out of the audit buffer.
    TokenRefused {
        /// [`AuthError::kind`].
        reason: String,
        /// Refusals merged into this event.
        count: u64,
    },
    /// A valid token asked for something it does not grant: another
    /// tenant's data, a topic or mode it lacks, ingest without the grant.
    Forbidden {
        /// What was asked (`ingest`, or `<mode> <tenant>/<topic>`).
        asked: String,
    },
    /// A tenant hit its rate limit.
    QuotaHit {
        /// Events refused.
        events: u64,
        /// When they would be admitted; `None`: the body is larger than
        /// the burst.
        retry_after: Option<Span>,
    },
    /// The fidelity ladder changed level.
    FidelityChanged {
        /// The level left.
        from: Fidelity,
        /// The level entered.
        to: Fidelity,
    },
    /// The alert rules were replaced.
    RulesChanged {
        /// Rules new by name.
        added: Vec<String>,
        /// Rules gone.
        removed: Vec<String>,
        /// Rules whose definition changed.
        changed: Vec<String>,
    },
    /// A subscriber was disconnected.
    SubscriberEvicted {
        /// Its id.
        subscriber: u64,
        /// Why.
        reason: String,
    },
}

impl Pipeline {
    /// The claims of `token`, checked against the configured keys. A
    /// refusal is audited.
    pub fn verify_token(&mut self, token: &str, now: Timestamp) -> Result<Claims, AuthError> {
        let result = match &self.keys {
            Some(keys) => keys.verify(token, now),
            None => Err(AuthError::UnknownKey(String::new())),
        };
        if let Err(e) = &result {
            self.audit(now, None, AuditAction::TokenRefused { reason: e.kind().to_owned(), count: 1 });
        }
        result
    }

    /// [`ingest`](Pipeline::ingest) for the bearer of `token`: the tenant
    /// is the token's, and the token must grant ingest. Refusals are
    /// audited and come back as [`IngestError::Auth`].
    pub fn ingest_with_token(
        &mut self,
        token: &str,
        content_type: &str,
        body: impl Into<Bytes>,
        now: Timestamp,
    ) -> Result<Receipt, IngestError> {
        let claims = self.verify_token(token, now)?;
        if !claims.ingest {
            let asked = "ingest".to_owned();
            self.audit(now, Some(&claims.tenant), AuditAction::Forbidden { asked: asked.clone() });
            return Err(AuthError::Forbidden { asked }.into());
        }
        self.ingest(&claims.tenant, content_type, body, now)
    }

    /// Checks that `claims` let their bearer read `topic` of `tenant` in
    /// `mode`; a refusal is audited. A token never reaches another
    /// tenant's data.
    pub fn authorize(
        &mut self,
        claims: &Claims,
        tenant: &str,
        topic: &str,
        mode: Mode,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        if claims.tenant == tenant && claims.allows(topic, mode) {
            return Ok(());
        }
        let asked = format!("{} {tenant}/{topic}", mode.as_str());
        self.audit(now, Some(&claims.tenant), AuditAction::Forbidden { asked: asked.clone() });
        Err(AuthError::Forbidden { asked })
    }

    /// Records an audit event for the next `advance`; beyond the buffer's
    /// bound the oldest are dropped and counted.
    pub(super) fn audit(&mut self, at: Timestamp, tenant: Option<&str>, action: AuditAction) {
        let event = AuditEvent { at, tenant: tenant.map(str::to_owned), action };
        push_audit(&mut self.audit, &mut self.audit_dropped, event);
    }
}

/// Appends `event` to the buffer of the next `advance`; beyond its bound
/// the oldest event is dropped and counted.
pub(super) fn push_audit(buffer: &mut VecDeque<AuditEvent>, dropped: &mut u64, event: AuditEvent) {
    if let (AuditAction::TokenRefused { reason, count: n }, Some(last)) = (&event.action, buffer.back_mut())
        && let AuditAction::TokenRefused { reason: last_reason, count } = &mut last.action
        && last_reason == reason
        && last.tenant == event.tenant
    {
        *count = count.saturating_add(*n);
        return;
    }
    if buffer.len() >= MAX_AUDIT_BUFFER {
        buffer.pop_front();
        *dropped = dropped.saturating_add(1);
    }
    buffer.push_back(event);
}

/// Audit events held between two `advance` calls.
const MAX_AUDIT_BUFFER: usize = 10_000;
