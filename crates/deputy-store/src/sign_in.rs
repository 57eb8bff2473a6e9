//! Sign-in state: OAuth apps, upstream identity providers, sign-ins in flight, authorization codes, refresh-token
//! families, apps' consents and the bootstrap admin's local password.
//!
//! Codes and refresh tokens are stored as hashes and counted on each presentation in the same statement that reads
//! them, so two presentations racing each other can never both be the first.

use crate::{EpochMillis, PrincipalId, StoreResult};
use async_trait::async_trait;
use std::fmt;

/// An OAuth app people sign in to. `scopes` is the widest scope set it may ask for (canonical wire form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthApp {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: String,
    /// `Some` for a confidential app: the hash of its client secret. `None`: a public app (PKCE is its only proof).
    pub secret_hash: Option<String>,
    /// Trusted apps (the preregistered CLI) are not shown a consent page.
    pub trusted: bool,
    pub created_ms: EpochMillis,
}

/// An upstream OpenID Connect provider. `Debug` leaves the client secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityProvider {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The ID-token claim listing the person's groups; `None`: group membership is not synced.
    pub groups_claim: Option<String>,
    /// The ID-token claim that becomes the user name (`email` by default, which must then be verified).
    pub username_claim: String,
    /// Domains a user name must belong to; empty: any.
    pub allowed_domains: Vec<String>,
    pub created_ms: EpochMillis,
}

impl fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("groups_claim", &self.groups_claim)
            .field("username_claim", &self.username_claim)
            .field("allowed_domains", &self.allowed_domains)
            .finish()
    }
}

/// The login at the upstream provider that a sign-in is waiting for: Deputy's own nonce and PKCE verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamLogin {
    pub issuer: String,
    pub nonce: String,
    pub verifier: String,
}

impl fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamLogin")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A sign-in in flight, as validated at the authorization endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub request_id: String,
    pub browser_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scopes: String,
    pub offline: bool,
    pub resource: Option<String>,
    pub upstream: Option<UpstreamLogin>,
    /// The person, once they have signed in (the request then waits for their consent).
    pub user_id: Option<PrincipalId>,
    pub created_ms: EpochMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInFamily {
    pub family_id: String,
    pub user_id: PrincipalId,
    pub client_id: String,
    pub created_ms: EpochMillis,
    pub revoked_ms: Option<EpochMillis>,
}

/// What an authorization code or a refresh token grants. `secret_hash` is the hash of the code or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub secret_hash: String,
    pub family_id: String,
    pub scopes: String,
    pub offline: bool,
    pub resource: Option<String>,
    pub expires_ms: EpochMillis,
}

/// An authorization code: a grant bound to the redirect URI and PKCE challenge of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub grant: Grant,
    pub redirect_uri: String,
    pub code_challenge: String,
}

/// A code or refresh token as presented: `first` is false when it had been presented before (a replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation<T> {
    pub item: T,
    pub family: SignInFamily,
    pub first: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConsent {
    pub user_id: PrincipalId,
    pub client_id: String,
    pub scopes: String,
    pub granted_ms: EpochMillis,
}

#[async_trait]
pub trait SignInStore: Send + Sync + 'static {
    /// Fails with `AlreadyExists` if the client id is taken.
    async fn insert_oauth_app(&self, app: &OAuthApp) -> StoreResult<()>;
    async fn oauth_app(&self, client_id: &str) -> StoreResult<Option<OAuthApp>>;
    async fn oauth_apps(&self) -> StoreResult<Vec<OAuthApp>>;
    async fn delete_oauth_app(&self, client_id: &str) -> StoreResult<bool>;

    /// Records or replaces the provider with this issuer.
    async fn put_identity_provider(&self, provider: &IdentityProvider) -> StoreResult<()>;
    async fn identity_providers(&self) -> StoreResult<Vec<IdentityProvider>>;
    async fn delete_identity_provider(&self, issuer: &str) -> StoreResult<bool>;

    /// Groups whose membership the provider `issuer` manages.
    async fn mark_idp_managed_group(&self, group: PrincipalId, issuer: &str) -> StoreResult<()>;
    async fn idp_managed_groups(&self) -> StoreResult<Vec<PrincipalId>>;

    /// Stores a new sign-in in flight and forgets those created before `expired_before`.
    async fn insert_authorization_request(
        &self,
        request: &AuthorizationRequest,
        expired_before: EpochMillis,
    ) -> StoreResult<()>;
    async fn authorization_request(
        &self,
        request_id: &str,
    ) -> StoreResult<Option<AuthorizationRequest>>;
    /// Records who signed in; false when the request is gone.
    async fn set_authorization_request_user(
        &self,
        request_id: &str,
        user: PrincipalId,
    ) -> StoreResult<bool>;
    /// Records the upstream login the request now waits for; false when the request is gone.
    async fn set_authorization_request_upstream(
        &self,
        request_id: &str,
        upstream: &UpstreamLogin,
    ) -> StoreResult<bool>;
    /// Removes and returns the request, so that it finishes at most once.
    async fn take_authorization_request(
        &self,
        request_id: &str,
    ) -> StoreResult<Option<AuthorizationRequest>>;

    /// Stores a new family together with its authorization code.
    async fn insert_authorization_code(
        &self,
        family: &SignInFamily,
        code: &AuthorizationCode,
    ) -> StoreResult<()>;
    /// Counts a presentation of the code with this hash and returns it; `None` for an unknown code.
    async fn present_authorization_code(
        &self,
        code_hash: &str,
    ) -> StoreResult<Option<Presentation<AuthorizationCode>>>;

    async fn insert_refresh_token(&self, token: &Grant) -> StoreResult<()>;
    /// Counts a presentation of the refresh token with this hash and returns it; `None` for an unknown token.
    async fn present_refresh_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<Presentation<Grant>>>;
    /// Marks the family revoked (its refresh tokens stop working); false when it was unknown or already revoked.
    async fn revoke_sign_in_family(&self, family_id: &str, now: EpochMillis) -> StoreResult<bool>;
    /// The unrevoked families of one user's sign-ins to one app.
    async fn live_sign_in_families(
        &self,
        user: PrincipalId,
        client_id: &str,
    ) -> StoreResult<Vec<String>>;
    /// The family a refresh token belongs to, whether or not it was presented before.
    async fn refresh_token_family(&self, token_hash: &str) -> StoreResult<Option<SignInFamily>>;

    async fn put_app_consent(&self, consent: &AppConsent) -> StoreResult<()>;
    async fn app_consent(
        &self,
        user: PrincipalId,
        client_id: &str,
    ) -> StoreResult<Option<AppConsent>>;
    async fn app_consents_of(&self, user: PrincipalId) -> StoreResult<Vec<AppConsent>>;
    async fn delete_app_consent(&self, user: PrincipalId, client_id: &str) -> StoreResult<bool>;

    async fn set_local_password(
        &self,
        user: PrincipalId,
        password_hash: &str,
        now: EpochMillis,
    ) -> StoreResult<()>;
    async fn local_password(&self, user: PrincipalId) -> StoreResult<Option<String>>;
}

mod sql {
    use super::{
        AppConsent, AuthorizationCode, AuthorizationRequest, Grant, IdentityProvider, OAuthApp,
        Presentation, SignInFamily, SignInStore, UpstreamLogin,
    };
    use crate::sql_store::{SqlStore, is_unique_violation};
    use crate::{EpochMillis, PrincipalId, StoreError, StoreResult};
    use async_trait::async_trait;
    use sqlx::Row;
    use sqlx::any::AnyRow;

    /// A stored JSON list that does not parse is an error, never an empty list (which could mean "anything").
    fn json_list(row: &AnyRow, column: &str) -> StoreResult<Vec<String>> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|error| StoreError::Corrupt(format!("the stored list `{column}`: {error}")))
    }

    fn to_json(list: &[String]) -> StoreResult<String> {
        serde_json::to_string(list).map_err(|error| StoreError::Corrupt(error.to_string()))
    }

    fn app_of(row: &AnyRow) -> StoreResult<OAuthApp> {
        Ok(OAuthApp {
            client_id: row.try_get("client_id")?,
            name: row.try_get("name")?,
            redirect_uris: json_list(row, "redirect_uris")?,
            scopes: row.try_get("scopes")?,
            secret_hash: row.try_get("secret_hash")?,
            trusted: crate::sql_store::flag(row, "trusted")?,
            created_ms: row.try_get("created_ms")?,
        })
    }

    fn provider_of(row: &AnyRow) -> StoreResult<IdentityProvider> {
        Ok(IdentityProvider {
            issuer: row.try_get("issuer")?,
            client_id: row.try_get("client_id")?,
            client_secret: row.try_get("client_secret")?,
            groups_claim: row.try_get("groups_claim")?,
            username_claim: row.try_get("username_claim")?,
            allowed_domains: json_list(row, "allowed_domains")?,
            created_ms: row.try_get("created_ms")?,
        })
    }

    fn request_of(row: &AnyRow) -> StoreResult<AuthorizationRequest> {
        let issuer: Option<String> = row.try_get("upstream_issuer")?;
        let nonce: Option<String> = row.try_get("upstream_nonce")?;
        let verifier: Option<String> = row.try_get("upstream_verifier")?;
        let upstream = match (issuer, nonce, verifier) {
            (Some(issuer), Some(nonce), Some(verifier)) => Some(UpstreamLogin {
                issuer,
                nonce,
                verifier,
            }),
            (None, None, None) => None,
            _ => {
                return Err(StoreError::Corrupt(
                    "a sign-in's upstream login is half recorded".into(),
                ));
            }
        };
        Ok(AuthorizationRequest {
            request_id: row.try_get("request_id")?,
            browser_hash: row.try_get("browser_hash")?,
            client_id: row.try_get("client_id")?,
            redirect_uri: row.try_get("redirect_uri")?,
            state: row.try_get("state")?,
            code_challenge: row.try_get("code_challenge")?,
            scopes: row.try_get("scopes")?,
            offline: crate::sql_store::flag(row, "offline")?,
            resource: row.try_get("resource")?,
            upstream,
            user_id: row.try_get::<Option<i64>, _>("user_id")?.map(PrincipalId),
            created_ms: row.try_get("created_ms")?,
        })
    }

    fn family_of(row: &AnyRow) -> StoreResult<SignInFamily> {
        Ok(SignInFamily {
            family_id: row.try_get("family_id")?,
            user_id: PrincipalId(row.try_get("user_id")?),
            client_id: row.try_get("client_id")?,
            created_ms: row.try_get("created_ms")?,
            revoked_ms: row.try_get("revoked_ms")?,
        })
    }

    fn grant_of(row: &AnyRow, hash_column: &str) -> StoreResult<Grant> {
        Ok(Grant {
            secret_hash: row.try_get(hash_column)?,
            family_id: row.try_get("family_id")?,
            scopes: row.try_get("scopes")?,
            offline: crate::sql_store::flag(row, "offline")?,
            resource: row.try_get("resource")?,
            expires_ms: row.try_get("expires_ms")?,
        })
    }

    fn consent_of(row: &AnyRow) -> StoreResult<AppConsent> {
        Ok(AppConsent {
            user_id: PrincipalId(row.try_get("user_id")?),
            client_id: row.try_get("client_id")?,
            scopes: row.try_get("scopes")?,
            granted_ms: row.try_get("granted_ms")?,
        })
    }

    impl SqlStore {
        async fn family(&self, family_id: &str) -> StoreResult<SignInFamily> {
            let row = sqlx::query(
                "SELECT family_id, user_id, client_id, created_ms, revoked_ms FROM sign_in_families \
                 WHERE family_id = $1",
            )
            .bind(family_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("sign-in family `{family_id}` is missing")))?;
            family_of(&row)
        }
    }

    #[async_trait]
    impl SignInStore for SqlStore {
        async fn insert_oauth_app(&self, app: &OAuthApp) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO oauth_apps (client_id, name, redirect_uris, scopes, secret_hash, trusted, \
                 created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&app.client_id)
            .bind(&app.name)
            .bind(to_json(&app.redirect_uris)?)
            .bind(&app.scopes)
            .bind(&app.secret_hash)
            .bind(app.trusted)
            .bind(app.created_ms)
            .execute(self.pool())
            .await
            .map_err(|error| match is_unique_violation(&error) {
                true => StoreError::AlreadyExists(format!("OAuth app `{}`", app.client_id)),
                false => error.into(),
            })?;
            Ok(())
        }

        async fn oauth_app(&self, client_id: &str) -> StoreResult<Option<OAuthApp>> {
            let row = sqlx::query("SELECT * FROM oauth_apps WHERE client_id = $1")
                .bind(client_id)
                .fetch_optional(self.pool())
                .await?;
            row.as_ref().map(app_of).transpose()
        }

        async fn oauth_apps(&self) -> StoreResult<Vec<OAuthApp>> {
            let rows = sqlx::query("SELECT * FROM oauth_apps ORDER BY created_ms, client_id")
                .fetch_all(self.pool())
                .await?;
            rows.iter().map(app_of).collect()
        }

        async fn delete_oauth_app(&self, client_id: &str) -> StoreResult<bool> {
            let done = sqlx::query("DELETE FROM oauth_apps WHERE client_id = $1")
                .bind(client_id)
                .execute(self.pool())
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn put_identity_provider(&self, provider: &IdentityProvider) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO identity_providers (issuer, client_id, client_secret, groups_claim, \
                 username_claim, allowed_domains, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (issuer) DO UPDATE SET client_id = excluded.client_id, \
                 client_secret = excluded.client_secret, groups_claim = excluded.groups_claim, \
                 username_claim = excluded.username_claim, allowed_domains = excluded.allowed_domains",
            )
            .bind(&provider.issuer)
            .bind(&provider.client_id)
            .bind(&provider.client_secret)
            .bind(&provider.groups_claim)
            .bind(&provider.username_claim)
            .bind(to_json(&provider.allowed_domains)?)
            .bind(provider.created_ms)
            .execute(self.pool())
            .await?;
            Ok(())
        }

        async fn identity_providers(&self) -> StoreResult<Vec<IdentityProvider>> {
            let rows = sqlx::query("SELECT * FROM identity_providers ORDER BY created_ms, issuer")
                .fetch_all(self.pool())
                .await?;
            rows.iter().map(provider_of).collect()
        }

        async fn delete_identity_provider(&self, issuer: &str) -> StoreResult<bool> {
            let done = sqlx::query("DELETE FROM identity_providers WHERE issuer = $1")
                .bind(issuer)
                .execute(self.pool())
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn mark_idp_managed_group(
            &self,
            group: PrincipalId,
            issuer: &str,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO idp_managed_groups (group_id, issuer) VALUES ($1, $2) \
                 ON CONFLICT (group_id) DO NOTHING",
            )
            .bind(group.0)
            .bind(issuer)
            .execute(self.pool())
            .await?;
            Ok(())
        }

        async fn idp_managed_groups(&self) -> StoreResult<Vec<PrincipalId>> {
            let ids: Vec<i64> = sqlx::query_scalar("SELECT group_id FROM idp_managed_groups")
                .fetch_all(self.pool())
                .await?;
            Ok(ids.into_iter().map(PrincipalId).collect())
        }

        async fn insert_authorization_request(
            &self,
            request: &AuthorizationRequest,
            expired_before: EpochMillis,
        ) -> StoreResult<()> {
            sqlx::query("DELETE FROM authorization_requests WHERE created_ms < $1")
                .bind(expired_before)
                .execute(self.pool())
                .await?;
            let upstream = request.upstream.as_ref();
            sqlx::query(
                "INSERT INTO authorization_requests (request_id, browser_hash, client_id, redirect_uri, \
                 state, code_challenge, scopes, offline, resource, upstream_issuer, upstream_nonce, \
                 upstream_verifier, user_id, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&request.request_id)
            .bind(&request.browser_hash)
            .bind(&request.client_id)
            .bind(&request.redirect_uri)
            .bind(&request.state)
            .bind(&request.code_challenge)
            .bind(&request.scopes)
            .bind(request.offline)
            .bind(&request.resource)
            .bind(upstream.map(|login| &login.issuer))
            .bind(upstream.map(|login| &login.nonce))
            .bind(upstream.map(|login| &login.verifier))
            .bind(request.user_id.map(|id| id.0))
            .bind(request.created_ms)
            .execute(self.pool())
            .await?;
            Ok(())
        }

        async fn authorization_request(
            &self,
            request_id: &str,
        ) -> StoreResult<Option<AuthorizationRequest>> {
            let row = sqlx::query("SELECT * FROM authorization_requests WHERE request_id = $1")
                .bind(request_id)
                .fetch_optional(self.pool())
                .await?;
            row.as_ref().map(request_of).transpose()
        }

        async fn set_authorization_request_user(
            &self,
            request_id: &str,
            user: PrincipalId,
        ) -> StoreResult<bool> {
            let done =
                sqlx::query("UPDATE authorization_requests SET user_id = $1 WHERE request_id = $2")
                    .bind(user.0)
                    .bind(request_id)
                    .execute(self.pool())
                    .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn set_authorization_request_upstream(
            &self,
            request_id: &str,
            upstream: &UpstreamLogin,
        ) -> StoreResult<bool> {
            let done = sqlx::query(
                "UPDATE authorization_requests SET upstream_issuer = $1, upstream_nonce = $2, \
                 upstream_verifier = $3 WHERE request_id = $4",
            )
            .bind(&upstream.issuer)
            .bind(&upstream.nonce)
            .bind(&upstream.verifier)
            .bind(request_id)
            .execute(self.pool())
            .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn take_authorization_request(
            &self,
            request_id: &str,
        ) -> StoreResult<Option<AuthorizationRequest>> {
            let row =
                sqlx::query("DELETE FROM authorization_requests WHERE request_id = $1 RETURNING *")
                    .bind(request_id)
                    .fetch_optional(self.pool())
                    .await?;
            row.as_ref().map(request_of).transpose()
        }

        async fn insert_authorization_code(
            &self,
            family: &SignInFamily,
            code: &AuthorizationCode,
        ) -> StoreResult<()> {
            let mut transaction = self.pool().begin().await?;
            sqlx::query(
                "INSERT INTO sign_in_families (family_id, user_id, client_id, created_ms, revoked_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&family.family_id)
            .bind(family.user_id.0)
            .bind(&family.client_id)
            .bind(family.created_ms)
            .bind(family.revoked_ms)
            .execute(&mut *transaction)
            .await?;
            sqlx::query(
                "INSERT INTO authorization_codes (code_hash, family_id, redirect_uri, code_challenge, \
                 scopes, offline, resource, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&code.grant.secret_hash)
            .bind(&code.grant.family_id)
            .bind(&code.redirect_uri)
            .bind(&code.code_challenge)
            .bind(&code.grant.scopes)
            .bind(code.grant.offline)
            .bind(&code.grant.resource)
            .bind(code.grant.expires_ms)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            Ok(())
        }

        async fn present_authorization_code(
            &self,
            code_hash: &str,
        ) -> StoreResult<Option<Presentation<AuthorizationCode>>> {
            let Some(row) = sqlx::query(
                "UPDATE authorization_codes SET uses = uses + 1 WHERE code_hash = $1 RETURNING *",
            )
            .bind(code_hash)
            .fetch_optional(self.pool())
            .await?
            else {
                return Ok(None);
            };
            let code = AuthorizationCode {
                grant: grant_of(&row, "code_hash")?,
                redirect_uri: row.try_get("redirect_uri")?,
                code_challenge: row.try_get("code_challenge")?,
            };
            let uses: i64 = row.try_get("uses")?;
            let family = self.family(&code.grant.family_id).await?;
            Ok(Some(Presentation {
                item: code,
                family,
                first: uses == 1,
            }))
        }

        async fn insert_refresh_token(&self, token: &Grant) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, scopes, resource, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&token.secret_hash)
            .bind(&token.family_id)
            .bind(&token.scopes)
            .bind(&token.resource)
            .bind(token.expires_ms)
            .execute(self.pool())
            .await?;
            Ok(())
        }

        async fn present_refresh_token(
            &self,
            token_hash: &str,
        ) -> StoreResult<Option<Presentation<Grant>>> {
            let Some(row) = sqlx::query(
                "UPDATE refresh_tokens SET uses = uses + 1 WHERE token_hash = $1 \
                 RETURNING token_hash, family_id, scopes, 1 AS offline, resource, expires_ms, uses",
            )
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?
            else {
                return Ok(None);
            };
            let grant = grant_of(&row, "token_hash")?;
            let uses: i64 = row.try_get("uses")?;
            let family = self.family(&grant.family_id).await?;
            Ok(Some(Presentation {
                item: grant,
                family,
                first: uses == 1,
            }))
        }

        async fn revoke_sign_in_family(
            &self,
            family_id: &str,
            now: EpochMillis,
        ) -> StoreResult<bool> {
            let done = sqlx::query(
                "UPDATE sign_in_families SET revoked_ms = $1 WHERE family_id = $2 AND revoked_ms IS NULL",
            )
            .bind(now)
            .bind(family_id)
            .execute(self.pool())
            .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn live_sign_in_families(
            &self,
            user: PrincipalId,
            client_id: &str,
        ) -> StoreResult<Vec<String>> {
            Ok(sqlx::query_scalar(
                "SELECT family_id FROM sign_in_families WHERE user_id = $1 AND client_id = $2 \
                 AND revoked_ms IS NULL",
            )
            .bind(user.0)
            .bind(client_id)
            .fetch_all(self.pool())
            .await?)
        }

        async fn refresh_token_family(
            &self,
            token_hash: &str,
        ) -> StoreResult<Option<SignInFamily>> {
            let family_id: Option<String> =
                sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(self.pool())
                    .await?;
            match family_id {
                Some(family_id) => Ok(Some(self.family(&family_id).await?)),
                None => Ok(None),
            }
        }

        async fn put_app_consent(&self, consent: &AppConsent) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO app_consents (user_id, client_id, scopes, granted_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, \
                 granted_ms = excluded.granted_ms",
            )
            .bind(consent.user_id.0)
            .bind(&consent.client_id)
            .bind(&consent.scopes)
            .bind(consent.granted_ms)
            .execute(self.pool())
            .await?;
            Ok(())
        }

        async fn app_consent(
            &self,
            user: PrincipalId,
            client_id: &str,
        ) -> StoreResult<Option<AppConsent>> {
            let row =
                sqlx::query("SELECT * FROM app_consents WHERE user_id = $1 AND client_id = $2")
                    .bind(user.0)
                    .bind(client_id)
                    .fetch_optional(self.pool())
                    .await?;
            row.as_ref().map(consent_of).transpose()
        }

        async fn app_consents_of(&self, user: PrincipalId) -> StoreResult<Vec<AppConsent>> {
            let rows =
                sqlx::query("SELECT * FROM app_consents WHERE user_id = $1 ORDER BY client_id")
                    .bind(user.0)
                    .fetch_all(self.pool())
                    .await?;
            rows.iter().map(consent_of).collect()
        }

        async fn delete_app_consent(
            &self,
            user: PrincipalId,
            client_id: &str,
        ) -> StoreResult<bool> {
            let done =
                sqlx::query("DELETE FROM app_consents WHERE user_id = $1 AND client_id = $2")
                    .bind(user.0)
                    .bind(client_id)
                    .execute(self.pool())
                    .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn set_local_password(
            &self,
            user: PrincipalId,
            password_hash: &str,
            now: EpochMillis,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO local_passwords (user_id, password_hash, updated_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, \
                 updated_ms = excluded.updated_ms",
            )
            .bind(user.0)
            .bind(password_hash)
            .bind(now)
            .execute(self.pool())
            .await?;
            Ok(())
        }

        async fn local_password(&self, user: PrincipalId) -> StoreResult<Option<String>> {
            Ok(
                sqlx::query_scalar("SELECT password_hash FROM local_passwords WHERE user_id = $1")
                    .bind(user.0)
                    .fetch_optional(self.pool())
                    .await?,
            )
        }
    }
}
