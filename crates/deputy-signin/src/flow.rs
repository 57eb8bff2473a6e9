//! The browser's path through a sign-in: the authorization request is checked and stored; the person signs in
//! upstream (or with the bootstrap admin's password); approves what the app asks for unless it is trusted or
//! already approved; and is sent back to the app with a code, `state` and `iss` (RFC 9207).

use crate::apps::{is_metadata_document_url, redirect_allowed};
use crate::{CODE_LIFETIME_MS, SIGN_IN_LIFETIME_MS, SignIn, SignInError, pkce};
use deputy_access::audit::AuditEntry;
use deputy_access::clock::now_millis;
use deputy_core::{ApiScope, MCP_PATH_PREFIX, ScopeSet};
use deputy_store::{
    AppConsent, AuthorizationCode, AuthorizationRequest, Grant, Identity, OAuthApp, SignInFamily,
    UpstreamLogin,
};
use deputy_tokens::{Secret, SecretHash};

const AUDIT_API: &str = "GET /oidc/v1/authorize";
/// OpenID Connect scopes an app may ask for next to API scopes; Deputy grants no claims for them, so they are
/// accepted and ignored.
const IGNORED_SCOPES: [&str; 3] = ["openid", "profile", "email"];
pub const OFFLINE_ACCESS: &str = "offline_access";

/// The query of an authorization request, as received.
#[derive(Debug, Clone, Default)]
pub struct AuthorizationParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub resource: Option<String>,
}

/// The callback from an upstream provider, as received.
#[derive(Debug, Clone, Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationFailure {
    /// Shown to the person, never redirected: the app or its redirect URI is not trusted, or the sign-in is not
    /// this browser's or no longer exists.
    Page(SignInError),
    /// The password form again, with why.
    Retry(String),
    /// Sent back to the app at its (verified) redirect URI, with the error, `state` and `iss`.
    Redirect(String),
}

/// A stored authorization request and the cookie value that binds it to the browser.
pub struct Started {
    pub request_id: String,
    pub browser_secret: Secret,
    pub next: NextStep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Send the browser to the provider's authorization endpoint.
    Upstream(String),
    /// No provider is configured: the bootstrap admin's password form.
    LocalPassword,
    /// Several providers: let the person choose (their issuers).
    ChooseProvider(Vec<String>),
}

/// Where a signed-in person goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Back to the app with a code.
    Redirect(String),
    /// The consent page.
    Consent(Consent),
}

/// What an app asks a person to approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub request_id: String,
    pub app_name: String,
    pub client_id: String,
    pub scopes: Vec<ApiScope>,
    pub offline: bool,
}

/// An app's requested scope split into API scopes and `offline_access`.
fn requested_scopes(scope: Option<&str>, app: &OAuthApp) -> Result<(ScopeSet, bool), SignInError> {
    let allowed = ScopeSet::parse(&app.scopes).map_err(SignInError::internal)?;
    let Some(scope) = scope else {
        return Ok((allowed, false));
    };
    let mut offline = false;
    let mut api = Vec::new();
    for name in scope.split_whitespace() {
        match name {
            OFFLINE_ACCESS => offline = true,
            name if IGNORED_SCOPES.contains(&name) => {}
            name => api.push(name),
        }
    }
    let scopes = ScopeSet::parse(&api.join(" "))
        .map_err(|error| SignInError::InvalidScope(format!("Invalid scope: {error}")))?;
    if scopes.is_empty() {
        return Err(SignInError::InvalidScope(
            "Invalid scope: no API scope requested".into(),
        ));
    }
    if !scopes.is_subset_of(allowed) {
        return Err(SignInError::InvalidScope(format!(
            "Invalid scope: this app may ask for at most `{allowed}`"
        )));
    }
    Ok((scopes, offline))
}

impl SignIn {
    /// Checks an authorization request and stores it. Until the app and its redirect URI are known to match, every
    /// error is a page; after that, errors go back to the app.
    pub async fn start(
        &self,
        params: AuthorizationParams,
    ) -> Result<Started, AuthorizationFailure> {
        let page = |error| AuthorizationFailure::Page(error);
        let client_id = params
            .client_id
            .as_deref()
            .ok_or_else(|| page(SignInError::InvalidRequest("missing `client_id`".into())))?;
        let app = match is_metadata_document_url(client_id) {
            true => self
                .client_from_metadata_document(client_id)
                .await
                .map_err(page)?,
            false => self
                .access
                .store()
                .oauth_app(client_id)
                .await
                .map_err(|error| page(error.into()))?
                .ok_or_else(|| {
                    page(SignInError::InvalidClient(format!(
                        "no app has client id `{client_id}`"
                    )))
                })?,
        };
        let redirect_uri = params
            .redirect_uri
            .clone()
            .ok_or_else(|| page(SignInError::InvalidRequest("missing `redirect_uri`".into())))?;
        if !redirect_allowed(&app, &redirect_uri) {
            return Err(page(SignInError::InvalidRequest(format!(
                "`{redirect_uri}` is not a redirect URI of this app"
            ))));
        }
        let back = |error: SignInError| {
            AuthorizationFailure::Redirect(self.error_redirect(
                &redirect_uri,
                params.state.as_deref(),
                &error,
            ))
        };
        if params.response_type.as_deref() != Some("code") {
            return Err(back(SignInError::UnsupportedResponseType(
                "only `response_type=code` is supported".into(),
            )));
        }
        let code_challenge = match (
            params.code_challenge_method.as_deref(),
            params.code_challenge.as_deref(),
        ) {
            (Some("S256"), Some(challenge)) if pkce::is_s256_challenge(challenge) => challenge,
            (Some("S256"), _) => {
                return Err(back(SignInError::InvalidRequest(
                    "`code_challenge` must be a base64url SHA-256 (43 characters)".into(),
                )));
            }
            _ => {
                return Err(back(SignInError::InvalidRequest(
                    "PKCE is required: `code_challenge` with `code_challenge_method=S256`".into(),
                )));
            }
        };
        let (scopes, offline) = requested_scopes(params.scope.as_deref(), &app).map_err(back)?;
        if let Some(resource) = &params.resource {
            self.check_resource(resource).map_err(back)?;
        }
        let providers = self
            .access
            .store()
            .identity_providers()
            .await
            .map_err(|error| back(error.into()))?;
        let (browser_secret, browser_hash) = deputy_tokens::generate_secret("dsib")
            .map_err(|error| back(SignInError::internal(error)))?;
        let (request_id, _) = deputy_tokens::generate_secret("dsir")
            .map_err(|error| back(SignInError::internal(error)))?;
        let request_id = request_id.into_string();
        let (upstream, next) = match providers.as_slice() {
            [] => (None, NextStep::LocalPassword),
            [provider] => {
                let login = new_upstream_login(&provider.issuer).map_err(back)?;
                let url = self
                    .upstream_authorization_url(provider, &request_id, &login)
                    .await
                    .map_err(back)?;
                (Some(login), NextStep::Upstream(url))
            }
            several => (
                None,
                NextStep::ChooseProvider(several.iter().map(|p| p.issuer.clone()).collect()),
            ),
        };
        let now = now_millis();
        let request = AuthorizationRequest {
            request_id: request_id.clone(),
            browser_hash: browser_hash.to_hex(),
            client_id: app.client_id,
            redirect_uri: redirect_uri.clone(),
            state: params.state.clone(),
            code_challenge: code_challenge.to_owned(),
            scopes: scopes.to_string(),
            offline,
            resource: params.resource.clone(),
            upstream,
            user_id: None,
            created_ms: now,
        };
        self.access
            .store()
            .insert_authorization_request(&request, now - SIGN_IN_LIFETIME_MS)
            .await
            .map_err(|error| back(error.into()))?;
        Ok(Started {
            request_id,
            browser_secret,
            next,
        })
    }

    /// The person chose `issuer` among several providers: where to send them.
    pub async fn choose_provider(
        &self,
        request_id: &str,
        browser_secret: Option<&str>,
        issuer: &str,
    ) -> Result<String, AuthorizationFailure> {
        let request = self.pending(request_id, browser_secret).await?;
        let outcome = async {
            let provider = self.provider(issuer).await?;
            let login = new_upstream_login(issuer)?;
            if !self
                .access
                .store()
                .set_authorization_request_upstream(request_id, &login)
                .await?
            {
                return Err(vanished());
            }
            self.upstream_authorization_url(&provider, request_id, &login)
                .await
        }
        .await;
        self.back_on_error(&request, outcome).await
    }

    /// The provider sent the browser back: validate its answer, provision the person, and go on.
    pub async fn finish_upstream(
        &self,
        callback: CallbackParams,
        browser_secret: Option<&str>,
    ) -> Result<Step, AuthorizationFailure> {
        let request_id = callback.state.as_deref().ok_or_else(|| {
            AuthorizationFailure::Page(SignInError::InvalidRequest(
                "the identity provider's answer has no `state`".into(),
            ))
        })?;
        let request = self.pending(request_id, browser_secret).await?;
        let Some(login) = request.upstream.clone() else {
            return Err(AuthorizationFailure::Page(vanished()));
        };
        // RFC 9207: an answer naming another issuer than the one this browser was sent to is a mix-up attack.
        if let Some(iss) = &callback.iss
            && *iss != login.issuer
        {
            self.abandon(&request).await;
            return Err(AuthorizationFailure::Page(SignInError::InvalidRequest(
                format!(
                    "the answer names issuer `{iss}`, but this sign-in went to `{}`",
                    login.issuer
                ),
            )));
        }
        let outcome = async {
            if let Some(error) = &callback.error {
                let description = callback.error_description.as_deref().unwrap_or_default();
                return Err(SignInError::AccessDenied(format!(
                    "the identity provider answered `{error}` {description}"
                )));
            }
            let code = callback.code.as_deref().ok_or_else(|| {
                SignInError::InvalidRequest("the identity provider's answer has no `code`".into())
            })?;
            let provider = self.provider(&login.issuer).await?;
            match self.person_from_upstream(&provider, code, &login).await {
                Ok(person) => {
                    let how = format!("signed in through `{}`", provider.issuer);
                    self.audit_sign_in(&person.name, &request, Ok(how)).await?;
                    self.signed_in(&request, person).await
                }
                Err(refusal) => {
                    let why = format!("sign-in through `{}` refused: {refusal}", provider.issuer);
                    self.audit_sign_in("unknown", &request, Err(why)).await?;
                    Err(refusal)
                }
            }
        }
        .await;
        self.back_on_error(&request, outcome).await
    }

    /// The bootstrap admin's password form was submitted. A wrong password shows the form again.
    pub async fn finish_local(
        &self,
        request_id: &str,
        browser_secret: Option<&str>,
        user_name: &str,
        password: &str,
    ) -> Result<Step, AuthorizationFailure> {
        let request = self.pending(request_id, browser_secret).await?;
        let outcome = async {
            if !self.access.store().identity_providers().await?.is_empty() {
                return Err(SignInError::AccessDenied(
                    "this workspace signs people in through its identity provider".into(),
                ));
            }
            match self.check_local_password(user_name, password).await {
                Ok(person) => {
                    let how = "signed in with the local password".to_owned();
                    self.audit_sign_in(&person.name, &request, Ok(how)).await?;
                    self.signed_in(&request, person).await.map(Ok)
                }
                Err(SignInError::AccessDenied(reason)) => {
                    let why = format!("local sign-in refused: {reason}");
                    self.audit_sign_in(user_name, &request, Err(why)).await?;
                    Ok(Err(reason))
                }
                Err(other) => Err(other),
            }
        }
        .await;
        self.back_on_error(&request, outcome)
            .await?
            .map_err(AuthorizationFailure::Retry)
    }

    /// The person approved (or refused) the consent page.
    pub async fn decide_consent(
        &self,
        request_id: &str,
        browser_secret: Option<&str>,
        approve: bool,
    ) -> Result<String, AuthorizationFailure> {
        let request = self.pending(request_id, browser_secret).await?;
        let outcome = async {
            let user_id = request.user_id.ok_or_else(vanished)?;
            if !approve {
                return Err(SignInError::AccessDenied(
                    "the user did not approve the request".into(),
                ));
            }
            let store = self.access.store();
            let requested = ScopeSet::parse(&request.scopes).map_err(SignInError::internal)?;
            // An earlier consent that no longer parses is dropped rather than widened from.
            let earlier = store
                .app_consent(user_id, &request.client_id)
                .await?
                .and_then(|consent| ScopeSet::parse(&consent.scopes).ok())
                .unwrap_or(ScopeSet::EMPTY);
            store
                .put_app_consent(&AppConsent {
                    user_id,
                    client_id: request.client_id.clone(),
                    scopes: earlier.union(requested).to_string(),
                    granted_ms: now_millis(),
                })
                .await?;
            self.issue_code(&request, user_id).await
        }
        .await;
        self.back_on_error(&request, outcome).await
    }

    /// A person has signed in: straight back to a trusted or already-approved app, else the consent page.
    async fn signed_in(
        &self,
        request: &AuthorizationRequest,
        person: Identity,
    ) -> Result<Step, SignInError> {
        let store = self.access.store();
        let app = store
            .oauth_app(&request.client_id)
            .await?
            .ok_or_else(|| SignInError::InvalidClient("the app was removed".into()))?;
        let requested = ScopeSet::parse(&request.scopes).map_err(SignInError::internal)?;
        let approved = app.trusted
            || store
                .app_consent(person.id, &app.client_id)
                .await?
                // A stored consent that does not parse approves nothing.
                .and_then(|consent| ScopeSet::parse(&consent.scopes).ok())
                .is_some_and(|granted| requested.is_subset_of(granted));
        if approved {
            return self
                .issue_code(request, person.id)
                .await
                .map(Step::Redirect);
        }
        if !store
            .set_authorization_request_user(&request.request_id, person.id)
            .await?
        {
            return Err(vanished());
        }
        Ok(Step::Consent(Consent {
            request_id: request.request_id.clone(),
            app_name: app.name,
            client_id: app.client_id,
            scopes: requested.iter().collect(),
            offline: request.offline,
        }))
    }

    /// Finishes the request (once) with a new code in a new family, and the redirect that carries it.
    async fn issue_code(
        &self,
        request: &AuthorizationRequest,
        user_id: deputy_store::PrincipalId,
    ) -> Result<String, SignInError> {
        let store = self.access.store();
        let request = store
            .take_authorization_request(&request.request_id)
            .await?
            .ok_or_else(vanished)?;
        let (code, code_hash) =
            deputy_tokens::generate_secret("doac").map_err(SignInError::internal)?;
        let now = now_millis();
        let family = SignInFamily {
            family_id: uuid::Uuid::new_v4().simple().to_string(),
            user_id,
            client_id: request.client_id.clone(),
            created_ms: now,
            revoked_ms: None,
        };
        let stored = AuthorizationCode {
            grant: Grant {
                secret_hash: code_hash.to_hex(),
                family_id: family.family_id.clone(),
                scopes: request.scopes.clone(),
                offline: request.offline,
                resource: request.resource.clone(),
                expires_ms: now + CODE_LIFETIME_MS,
            },
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
        };
        store.insert_authorization_code(&family, &stored).await?;
        Ok(self.redirect_with(
            &request.redirect_uri,
            &[("code", code.expose())],
            request.state.as_deref(),
        ))
    }

    async fn provider(&self, issuer: &str) -> Result<deputy_store::IdentityProvider, SignInError> {
        self.access
            .store()
            .identity_providers()
            .await?
            .into_iter()
            .find(|provider| provider.issuer == issuer)
            .ok_or_else(|| {
                SignInError::AccessDenied(format!(
                    "`{issuer}` is not an identity provider of this workspace"
                ))
            })
    }

    /// The request `request_id`, if it exists, is young enough and belongs to this browser.
    async fn pending(
        &self,
        request_id: &str,
        browser_secret: Option<&str>,
    ) -> Result<AuthorizationRequest, AuthorizationFailure> {
        let request = self
            .access
            .store()
            .authorization_request(request_id)
            .await
            .map_err(|error| AuthorizationFailure::Page(error.into()))?
            .ok_or_else(|| AuthorizationFailure::Page(vanished()))?;
        let this_browser = SecretHash::from_hex(&request.browser_hash)
            .is_ok_and(|hash| browser_secret.is_some_and(|secret| hash.matches(secret)));
        if !this_browser {
            return Err(AuthorizationFailure::Page(SignInError::InvalidRequest(
                "this sign-in was started in another browser".into(),
            )));
        }
        if request.created_ms + SIGN_IN_LIFETIME_MS < now_millis() {
            self.abandon(&request).await;
            return Err(AuthorizationFailure::Page(vanished()));
        }
        Ok(request)
    }

    /// On an error, ends the request (so it cannot be finished afterwards) and sends the error back to the app.
    async fn back_on_error<T>(
        &self,
        request: &AuthorizationRequest,
        outcome: Result<T, SignInError>,
    ) -> Result<T, AuthorizationFailure> {
        match outcome {
            Ok(value) => Ok(value),
            Err(error) => {
                self.abandon(request).await;
                Err(AuthorizationFailure::Redirect(self.error_redirect(
                    &request.redirect_uri,
                    request.state.as_deref(),
                    &error,
                )))
            }
        }
    }

    async fn abandon(&self, request: &AuthorizationRequest) {
        // Best effort: the refusal stands either way, and an unremoved request expires on its own.
        let _ = self
            .access
            .store()
            .take_authorization_request(&request.request_id)
            .await;
    }

    fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: &SignInError,
    ) -> String {
        // An internal failure is logged here; the app only learns that there was one.
        let description = match error {
            SignInError::Internal(cause) => {
                tracing::error!(%cause, "internal error in sign-in");
                "internal error; see the server log".to_owned()
            }
            refused => refused.to_string(),
        };
        self.redirect_with(
            redirect_uri,
            &[
                ("error", error.oauth_error_code()),
                ("error_description", &description),
            ],
            state,
        )
    }

    /// `redirect_uri` with `pairs`, the app's `state` (when it sent one) and `iss` added to its query.
    fn redirect_with(
        &self,
        redirect_uri: &str,
        pairs: &[(&str, &str)],
        state: Option<&str>,
    ) -> String {
        let Ok(mut url) = url::Url::parse(redirect_uri) else {
            // INVARIANT: redirect URIs reach here only after `redirect_allowed`, which matched a registered one.
            return redirect_uri.to_owned();
        };
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in pairs {
                query.append_pair(name, value);
            }
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", &self.issuer());
        }
        url.to_string()
    }

    /// An RFC 8707 resource must be this server or one of its MCP servers (`/api/2.0/mcp/…`): the only paths that
    /// accept a token bound to a resource.
    fn check_resource(&self, resource: &str) -> Result<(), SignInError> {
        let refused = || {
            SignInError::InvalidTarget(format!(
                "`{resource}` is not a resource of this server ({})",
                self.access.base_url()
            ))
        };
        let url = url::Url::parse(resource).map_err(|_| refused())?;
        let base = url::Url::parse(self.access.base_url()).map_err(|_| refused())?;
        let same_origin = url.origin() == base.origin();
        let path = url.path().trim_end_matches('/');
        let on_this_server = path == base.path().trim_end_matches('/')
            || path.starts_with(&format!(
                "{}{MCP_PATH_PREFIX}",
                base.path().trim_end_matches('/')
            ));
        let userinfo = !url.username().is_empty() || url.password().is_some();
        if !same_origin
            || !on_this_server
            || userinfo
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(refused());
        }
        Ok(())
    }

    async fn audit_sign_in(
        &self,
        user_name: &str,
        request: &AuthorizationRequest,
        outcome: Result<String, String>,
    ) -> Result<(), SignInError> {
        let event = AuditEntry::of_subject(user_name, AUDIT_API)
            .securable(format!("oauth-app/{}", request.client_id))
            .outcome(outcome);
        self.access
            .record(&[event])
            .await
            .map_err(SignInError::from)
    }
}

fn vanished() -> SignInError {
    SignInError::InvalidRequest(
        "this sign-in does not exist or has expired; start again from the app".into(),
    )
}

fn new_upstream_login(issuer: &str) -> Result<UpstreamLogin, SignInError> {
    let (nonce, _) = deputy_tokens::generate_secret("dsin").map_err(SignInError::internal)?;
    Ok(UpstreamLogin {
        issuer: issuer.to_owned(),
        nonce: nonce.into_string(),
        verifier: pkce::new_verifier().map_err(SignInError::internal)?,
    })
}
