//! The token endpoint's grants for signed-in people: `authorization_code` and `refresh_token`; the revocation of a
//! sign-in's family; and apps' consents as their users see and withdraw them.

use crate::{REFRESH_TOKEN_LIFETIME_MS, SignIn, SignInError, pkce};
use deputy_access::Error;
use deputy_access::audit::AuditEntry;
use deputy_access::clock::{now_millis, now_seconds};
use deputy_access::credentials::{ACCESS_TOKEN_LIFETIME_SECONDS, Caller};
use deputy_core::ScopeSet;
use deputy_store::{AppConsent, Grant, IdentityKind, OAuthApp, SignInFamily};
use deputy_tokens::{AccessClaims, Secret, SecretHash};

const AUDIT_API: &str = "POST /oidc/v1/token";

/// The id that an access token issued in a sign-in family (and every token exchanged from it) names in its
/// `derived_from`, so that revoking the family revokes them all.
pub fn family_ancestor_id(family_id: &str) -> String {
    format!("signin:{family_id}")
}

/// `grant_type=authorization_code`, as received.
#[derive(Debug, Clone, Default)]
pub struct CodeRedemption {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub resource: Option<String>,
}

/// `grant_type=refresh_token`, as received.
#[derive(Debug, Clone, Default)]
pub struct RefreshRequest {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

/// What the token endpoint answers.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    pub claims: AccessClaims,
    pub refresh_token: Option<Secret>,
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, SignInError> {
    value
        .as_deref()
        .ok_or_else(|| SignInError::InvalidRequest(format!("missing `{name}`")))
}

impl SignIn {
    pub async fn redeem_code(&self, request: CodeRedemption) -> Result<IssuedTokens, SignInError> {
        let app = self
            .authenticate_app(
                request.client_id.as_deref(),
                request.client_secret.as_deref(),
            )
            .await?;
        let code = required(&request.code, "code")?;
        let presented = self
            .access
            .store()
            .present_authorization_code(&SecretHash::of(code).to_hex())
            .await?
            .ok_or_else(|| SignInError::InvalidGrant("unknown authorization code".into()))?;
        let family = presented.family;
        let code = presented.item;
        if !presented.first {
            // RFC 6749 §4.1.2: a code used twice was stolen, or its first use was; neither holder keeps anything.
            self.revoke_family(&family).await?;
            return self
                .refuse(&family, "the authorization code was already used; every token issued from it is revoked")
                .await;
        }
        if family.client_id != app.client_id {
            return self
                .refuse(&family, "the code was issued to another app")
                .await;
        }
        if code.grant.expires_ms <= now_millis() {
            return self
                .refuse(&family, "the authorization code has expired")
                .await;
        }
        if request.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
            return self
                .refuse(
                    &family,
                    "`redirect_uri` is not the one of the authorization request",
                )
                .await;
        }
        let verifier = request.code_verifier.as_deref().unwrap_or_default();
        if !pkce::verifies(verifier, &code.code_challenge) {
            return self
                .refuse(&family, "`code_verifier` does not match the code challenge")
                .await;
        }
        if let Some(resource) = &request.resource
            && code.grant.resource.as_ref() != Some(resource)
        {
            return Err(SignInError::InvalidTarget(
                "`resource` is not the one of the authorization request".into(),
            ));
        }
        let scopes = ScopeSet::parse(&code.grant.scopes).map_err(SignInError::internal)?;
        self.issue(&app, &family, scopes, &code.grant).await
    }

    pub async fn refresh(&self, request: RefreshRequest) -> Result<IssuedTokens, SignInError> {
        let app = self
            .authenticate_app(
                request.client_id.as_deref(),
                request.client_secret.as_deref(),
            )
            .await?;
        let token = required(&request.refresh_token, "refresh_token")?;
        let presented = self
            .access
            .store()
            .present_refresh_token(&SecretHash::of(token).to_hex())
            .await?
            .ok_or_else(|| SignInError::InvalidGrant("unknown refresh token".into()))?;
        let family = presented.family;
        let grant = presented.item;
        if family.revoked_ms.is_some() {
            return self.refuse(&family, "this sign-in has been revoked").await;
        }
        if !presented.first {
            // A spent refresh token presented again: one of its holders is not the app. Revoke the lot.
            self.revoke_family(&family).await?;
            return self
                .refuse(
                    &family,
                    "the refresh token was already used; the whole sign-in is revoked",
                )
                .await;
        }
        if family.client_id != app.client_id {
            return self
                .refuse(&family, "the refresh token was issued to another app")
                .await;
        }
        if grant.expires_ms <= now_millis() {
            return self.refuse(&family, "the refresh token has expired").await;
        }
        if let Some(resource) = &request.resource
            && grant.resource.as_ref() != Some(resource)
        {
            return Err(SignInError::InvalidTarget(
                "`resource` is not the one the sign-in was for".into(),
            ));
        }
        let granted = ScopeSet::parse(&grant.scopes).map_err(SignInError::internal)?;
        let scopes = match request.scope.as_deref() {
            None => granted,
            Some(text) => {
                let api: Vec<&str> = text
                    .split_whitespace()
                    .filter(|name| *name != crate::flow::OFFLINE_ACCESS)
                    .collect();
                let asked = ScopeSet::parse(&api.join(" ")).map_err(|error| {
                    SignInError::InvalidScope(format!("Invalid scope: {error}"))
                })?;
                if !asked.is_subset_of(granted) {
                    return Err(SignInError::InvalidScope(format!(
                        "Invalid scope: this sign-in granted at most `{granted}`"
                    )));
                }
                asked
            }
        };
        self.issue(&app, &family, scopes, &grant).await
    }

    /// RFC 7009 for refresh tokens: revokes the sign-in the token belongs to. False when it is not one.
    pub async fn revoke_refresh_token(&self, token: &str) -> Result<bool, SignInError> {
        let family = self
            .access
            .store()
            .refresh_token_family(&SecretHash::of(token).to_hex())
            .await?;
        match family {
            Some(family) => {
                self.revoke_family(&family).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The apps that may act for the caller, and with which scopes.
    pub async fn app_consents(
        &self,
        caller: &Caller,
    ) -> Result<Vec<(AppConsent, Option<OAuthApp>)>, Error> {
        let user = own_user(caller)?;
        let store = self.access.store();
        let mut listed = Vec::new();
        for consent in store.app_consents_of(user).await? {
            let app = store.oauth_app(&consent.client_id).await?;
            listed.push((consent, app));
        }
        Ok(listed)
    }

    /// Withdraws the caller's consent to an app and revokes the app's sign-ins for them: its refresh tokens stop
    /// working, and so do the access tokens they gave.
    pub async fn withdraw_app_consent(
        &self,
        caller: &Caller,
        client_id: &str,
    ) -> Result<(), Error> {
        let user = own_user(caller)?;
        let store = self.access.store();
        // No approval, nothing withdrawn: a trusted app's sign-ins (the console's, the CLI's) are ended by revoking
        // their refresh token, not through here.
        if !store.delete_app_consent(user, client_id).await? {
            return Err(Error::not_found(format!(
                "you have not approved an app with client id `{client_id}`"
            )));
        }
        for family_id in store.live_sign_in_families(user, client_id).await? {
            self.revoke_family_id(&family_id)
                .await
                .map_err(Error::internal)?;
        }
        Ok(())
    }

    async fn issue(
        &self,
        app: &OAuthApp,
        family: &SignInFamily,
        scopes: ScopeSet,
        grant: &Grant,
    ) -> Result<IssuedTokens, SignInError> {
        let directory = self.access.directory();
        let person = directory
            .get(family.user_id)
            .filter(|person| person.kind == IdentityKind::User && person.active)
            .cloned();
        let Some(person) = person else {
            return self
                .refuse(family, "the user no longer exists or is disabled")
                .await;
        };
        let credentials = self.access.credentials();
        let audience = grant
            .resource
            .clone()
            .unwrap_or_else(|| credentials.audience());
        let mut claims = AccessClaims::issue(
            &credentials.issuer(),
            &audience,
            &person.name,
            scopes,
            now_seconds(),
            ACCESS_TOKEN_LIFETIME_SECONDS,
        )
        .map_err(SignInError::internal)?;
        claims.client_id = Some(app.client_id.clone());
        claims.derived_from = vec![family_ancestor_id(&family.family_id)];
        let refresh_token = match grant.offline {
            true => {
                let (token, hash) =
                    deputy_tokens::generate_secret("dort").map_err(SignInError::internal)?;
                self.access
                    .store()
                    .insert_refresh_token(&Grant {
                        secret_hash: hash.to_hex(),
                        family_id: family.family_id.clone(),
                        scopes: grant.scopes.clone(),
                        offline: true,
                        resource: grant.resource.clone(),
                        expires_ms: now_millis() + REFRESH_TOKEN_LIFETIME_MS,
                    })
                    .await?;
                Some(token)
            }
            false => None,
        };
        let access_token = credentials.sign(&claims).map_err(SignInError::internal)?;
        let event = AuditEntry::of_subject(&person.name, AUDIT_API)
            .securable(format!("oauth-app/{}", app.client_id))
            .outcome(Ok(format!(
                "token issued to app `{}` with `{scopes}`",
                app.name
            )));
        self.access.record(&[event]).await?;
        Ok(IssuedTokens {
            access_token,
            claims,
            refresh_token,
        })
    }

    /// Audits a refused grant and returns it as `invalid_grant`.
    async fn refuse<T>(&self, family: &SignInFamily, why: &str) -> Result<T, SignInError> {
        let user = self
            .access
            .directory()
            .get(family.user_id)
            .map_or_else(|| "unknown".to_owned(), |person| person.name.clone());
        let event = AuditEntry::of_subject(user, AUDIT_API)
            .securable(format!("oauth-app/{}", family.client_id))
            .outcome(Err(why.to_owned()));
        self.access.record(&[event]).await?;
        Err(SignInError::InvalidGrant(why.to_owned()))
    }

    async fn revoke_family(&self, family: &SignInFamily) -> Result<(), SignInError> {
        self.revoke_family_id(&family.family_id).await
    }

    /// Revokes the family's refresh tokens (in the store) and its access tokens and everything exchanged from them
    /// (on the revocation list, for as long as any of them can live).
    async fn revoke_family_id(&self, family_id: &str) -> Result<(), SignInError> {
        self.access
            .store()
            .revoke_sign_in_family(family_id, now_millis())
            .await?;
        self.access
            .credentials()
            .revoke_access_token(
                &family_ancestor_id(family_id),
                now_seconds() + ACCESS_TOKEN_LIFETIME_SECONDS,
            )
            .await?;
        Ok(())
    }
}

/// The user a consent list belongs to: only the user themselves, never an agent acting for them.
fn own_user(caller: &Caller) -> Result<deputy_store::PrincipalId, Error> {
    if caller.is_delegated() {
        return Err(Error::permission_denied(
            "an agent acting for a user cannot see or change the user's app approvals",
        ));
    }
    Ok(caller.identity.id)
}
