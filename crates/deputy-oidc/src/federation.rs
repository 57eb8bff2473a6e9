//! Federation policies (declared by admins) and the exchange of a foreign JWT for a Deputy token.

use crate::keys::{IssuerKeys, check_fetchable};
use crate::verify::{Expected, verify_foreign_jwt};
use deputy_access::clock::{now_millis, now_seconds};
use deputy_access::credentials::{ACCESS_TOKEN_LIFETIME_SECONDS, Caller};
use deputy_access::{Access, Error};
use deputy_core::ScopeSet;
use deputy_store::{FederationPolicy, Identity, IdentityKind, PrincipalId};
use deputy_tokens::AccessClaims;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

const AUDIT_API: &str = "POST /oidc/v1/token federation";

/// Why an exchange was refused, in RFC 6749 terms.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The token or its mapping is not acceptable (`invalid_grant`).
    #[error("{0}")]
    Refused(String),
    /// Deputy could not decide (`server_error`); the exchange is refused all the same.
    #[error("{0}")]
    Internal(String),
}

impl FederationError {
    pub fn oauth_error_code(&self) -> &'static str {
        match self {
            FederationError::Refused(_) => "invalid_grant",
            FederationError::Internal(_) => "server_error",
        }
    }
}

/// A policy as an admin declares it; `policy_id` and the defaults are filled in by [`Federation::create_policy`].
#[derive(Debug, Clone, Default)]
pub struct NewFederationPolicy {
    pub policy_id: Option<String>,
    pub description: Option<String>,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub subject_claim: Option<String>,
    pub subject: Option<String>,
    pub service_principal_id: Option<PrincipalId>,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

pub struct Federation {
    access: Arc<Access>,
    keys: IssuerKeys,
}

impl Federation {
    pub fn new(access: Arc<Access>) -> Result<Federation, deputy_outbound::OutboundError> {
        Ok(Federation {
            access,
            keys: IssuerKeys::new()?,
        })
    }

    /// Whether `token` is a JWT from another issuer than this server: the tokens [`Federation::exchange`] handles.
    /// Read without verification; only the choice of path depends on it.
    pub fn is_foreign_jwt(&self, token: &str) -> bool {
        unverified_issuer(token).is_some_and(|issuer| issuer != self.access.credentials().issuer())
    }

    /// Exchanges a foreign JWT for the claims of a Deputy access token. `client_id` names the service principal
    /// whose policies apply (workload identity federation); without it, the account-wide policies apply and the
    /// subject claim names a user.
    pub async fn exchange(
        &self,
        subject_token: &str,
        client_id: Option<&str>,
        scope: Option<ScopeSet>,
    ) -> Result<AccessClaims, FederationError> {
        let issuer = unverified_issuer(subject_token).ok_or_else(|| {
            FederationError::Refused("the subject token is not a JWT with an `iss`".into())
        })?;
        let outcome = self.accept(&issuer, subject_token, client_id).await;
        let (subject_name, audit_outcome) = match &outcome {
            Ok((identity, policy)) => (
                identity.name.clone(),
                Ok(format!(
                    "token of `{issuer}` accepted under federation policy `{}`",
                    policy.policy_id
                )),
            ),
            Err(error) => (
                client_id.unwrap_or("unknown").to_owned(),
                Err(format!("token of `{issuer}` refused: {error}")),
            ),
        };
        let event = deputy_access::audit::AuditEntry::of_subject(subject_name, AUDIT_API)
            .securable(format!("issuer/{issuer}"))
            .outcome(audit_outcome);
        self.access
            .record(&[event])
            .await
            .map_err(|error| FederationError::Internal(error.message))?;
        let (identity, _) = outcome?;
        let credentials = self.access.credentials();
        let mut claims = AccessClaims::issue(
            &credentials.issuer(),
            &credentials.audience(),
            &identity.name,
            scope.unwrap_or_else(ScopeSet::all),
            now_seconds(),
            ACCESS_TOKEN_LIFETIME_SECONDS,
        )
        .map_err(|error| FederationError::Internal(error.to_string()))?;
        if identity.kind == IdentityKind::ServicePrincipal {
            claims.client_id = Some(identity.name);
        }
        Ok(claims)
    }

    /// The principal `token` maps to and the policy that accepted it.
    async fn accept(
        &self,
        issuer: &str,
        token: &str,
        client_id: Option<&str>,
    ) -> Result<(Identity, FederationPolicy), FederationError> {
        let store = self.access.store();
        let internal =
            |error: deputy_store::StoreError| FederationError::Internal(error.to_string());
        let service_principal = match client_id {
            Some(application_id) => Some(
                store
                    .find_identity(IdentityKind::ServicePrincipal, application_id)
                    .await
                    .map_err(internal)?
                    .filter(|principal| principal.active)
                    .ok_or_else(|| {
                        FederationError::Refused(format!(
                            "no active service principal `{application_id}`"
                        ))
                    })?,
            ),
            None => None,
        };
        let policies: Vec<FederationPolicy> = store
            .federation_policies_for_issuer(issuer)
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|policy| {
                policy.service_principal_id == service_principal.as_ref().map(|sp| sp.id)
            })
            .collect();
        if policies.is_empty() {
            return Err(FederationError::Refused(match &service_principal {
                Some(sp) => format!(
                    "no federation policy of `{}` trusts issuer `{issuer}`",
                    sp.name
                ),
                None => format!("no federation policy trusts issuer `{issuer}`"),
            }));
        }
        let mut refusals = Vec::new();
        for policy in policies {
            match verify_foreign_jwt(&self.keys, token, &Expected::of_policy(&policy)).await {
                Ok(claims) => {
                    let identity = match &service_principal {
                        Some(sp) => sp.clone(),
                        None => self.user_named(&policy, &claims).await?,
                    };
                    return Ok((identity, policy));
                }
                Err(reason) => refusals.push(format!("policy `{}`: {reason}", policy.policy_id)),
            }
        }
        Err(FederationError::Refused(refusals.join("; ")))
    }

    /// The active user whose user name is the policy's subject claim.
    async fn user_named(
        &self,
        policy: &FederationPolicy,
        claims: &Map<String, Value>,
    ) -> Result<Identity, FederationError> {
        let name = claims
            .get(&policy.subject_claim)
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.access
            .store()
            .find_identity(IdentityKind::User, name)
            .await
            .map_err(|error| FederationError::Internal(error.to_string()))?
            .filter(|user| user.active)
            .ok_or_else(|| FederationError::Refused(format!("no active user `{name}`")))
    }

    // ---- policies --------------------------------------------------------------------------------------------

    /// Declares a policy (admins only). Audiences default to this server's token audience; the subject claim to
    /// `sub`.
    pub async fn create_policy(
        &self,
        caller: &Caller,
        new: NewFederationPolicy,
    ) -> Result<FederationPolicy, Error> {
        caller.require_admin()?;
        check_fetchable(&new.issuer).map_err(Error::invalid_parameter)?;
        let policy_id = match new.policy_id {
            Some(id) => check_policy_id(id)?,
            None => uuid::Uuid::new_v4().to_string(),
        };
        let audiences: Vec<String> = new
            .audiences
            .into_iter()
            .filter(|aud| !aud.is_empty())
            .collect();
        let audiences = match audiences.is_empty() {
            true => vec![self.access.credentials().audience()],
            false => audiences,
        };
        if let Some(id) = new.service_principal_id {
            let principal = self.access.store().get_identity(id).await?;
            if principal.is_none_or(|principal| principal.kind != IdentityKind::ServicePrincipal) {
                return Err(Error::not_found(format!(
                    "service principal {} does not exist",
                    id.0
                )));
            }
        }
        let policy = FederationPolicy {
            policy_id,
            description: new.description.unwrap_or_default(),
            issuer: new.issuer,
            audiences,
            subject_claim: new
                .subject_claim
                .filter(|claim| !claim.is_empty())
                .unwrap_or_else(|| "sub".to_owned()),
            subject: new.subject.filter(|subject| !subject.is_empty()),
            service_principal_id: new.service_principal_id,
            created_ms: now_millis(),
            created_by: caller.identity.id,
        };
        self.access
            .store()
            .insert_federation_policy(&policy)
            .await?;
        Ok(policy)
    }

    /// The policies of one service principal, or (with `None`) the account-wide ones. Admins only.
    pub async fn list_policies(
        &self,
        caller: &Caller,
        service_principal_id: Option<PrincipalId>,
    ) -> Result<Vec<FederationPolicy>, Error> {
        caller.require_admin()?;
        Ok(self
            .access
            .store()
            .federation_policies()
            .await?
            .into_iter()
            .filter(|policy| policy.service_principal_id == service_principal_id)
            .collect())
    }

    /// One policy of the given owner (a service principal, or `None` for account-wide). Admins only.
    pub async fn get_policy(
        &self,
        caller: &Caller,
        service_principal_id: Option<PrincipalId>,
        policy_id: &str,
    ) -> Result<FederationPolicy, Error> {
        caller.require_admin()?;
        self.access
            .store()
            .federation_policy(policy_id)
            .await?
            .filter(|policy| policy.service_principal_id == service_principal_id)
            .ok_or_else(|| {
                Error::not_found(format!("federation policy `{policy_id}` does not exist"))
            })
    }

    pub async fn delete_policy(
        &self,
        caller: &Caller,
        service_principal_id: Option<PrincipalId>,
        policy_id: &str,
    ) -> Result<(), Error> {
        let policy = self
            .get_policy(caller, service_principal_id, policy_id)
            .await?;
        self.access
            .store()
            .delete_federation_policy(&policy.policy_id)
            .await?;
        Ok(())
    }
}

/// A JWT's `iss`, read without verifying anything: only to choose the path and the policies to verify against.
fn unverified_issuer(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode_claims::<UnverifiedIssuer>(token)
        .ok()
        .and_then(|claims| claims.iss)
}

/// Policy ids are path segments: lowercase letters, digits and hyphens, as Databricks allows.
fn check_policy_id(id: String) -> Result<String, Error> {
    let valid = !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    match valid {
        true => Ok(id),
        false => Err(Error::invalid_parameter(format!(
            "policy id `{id}` must be 1 to 63 lowercase letters, digits or hyphens"
        ))),
    }
}
