//! Upstream OpenID Connect providers: Deputy's own login at the provider (authorization code with PKCE and a
//! nonce), the ID token's validation, the user it maps to (created just in time) and the groups the provider
//! manages.

use crate::{SignIn, SignInError};
use deputy_access::Error;
use deputy_access::clock::now_millis;
use deputy_access::credentials::Caller;
use deputy_access::directory::USERS_GROUP;
use deputy_oidc::keys::check_fetchable;
use deputy_oidc::verify::{Expected, verify_foreign_jwt};
use deputy_store::{Identity, IdentityKind, IdentityProvider, NewIdentity, UpstreamLogin};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The claim a user name comes from unless the admin names another; it must then be verified.
pub const DEFAULT_USERNAME_CLAIM: &str = "email";
/// More groups than this in one ID token is refused rather than synced.
const MAX_GROUPS: usize = 500;

/// A provider as an admin declares it.
#[derive(Debug, Clone, Default)]
pub struct NewIdentityProvider {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub groups_claim: Option<String>,
    pub username_claim: Option<String>,
    pub allowed_domains: Vec<String>,
}

#[derive(Deserialize)]
struct UpstreamTokens {
    id_token: Option<String>,
}

impl SignIn {
    /// Adds (or replaces) a provider after checking that its discovery document can be read, so a mistyped issuer
    /// fails here rather than at the first person's sign-in.
    pub async fn add_identity_provider(
        &self,
        caller: &Caller,
        new: NewIdentityProvider,
    ) -> Result<IdentityProvider, Error> {
        caller.require_admin()?;
        let issuer = new.issuer.trim_end_matches('/').to_owned();
        check_fetchable(&issuer).map_err(Error::invalid_parameter)?;
        if new.client_id.is_empty() || new.client_secret.is_empty() {
            return Err(Error::invalid_parameter(
                "`client_id` and `client_secret` are required",
            ));
        }
        self.keys
            .sign_in_endpoints(&issuer)
            .await
            .map_err(|error| Error::invalid_parameter(error.to_string()))?;
        let provider = IdentityProvider {
            issuer,
            client_id: new.client_id,
            client_secret: new.client_secret,
            groups_claim: new.groups_claim.filter(|claim| !claim.is_empty()),
            username_claim: new
                .username_claim
                .filter(|claim| !claim.is_empty())
                .unwrap_or_else(|| DEFAULT_USERNAME_CLAIM.to_owned()),
            allowed_domains: new
                .allowed_domains
                .iter()
                .map(|domain| domain.trim().trim_start_matches('@').to_ascii_lowercase())
                .filter(|domain| !domain.is_empty())
                .collect(),
            created_ms: now_millis(),
        };
        self.access.store().put_identity_provider(&provider).await?;
        Ok(provider)
    }

    pub async fn identity_providers(
        &self,
        caller: &Caller,
    ) -> Result<Vec<IdentityProvider>, Error> {
        caller.require_admin()?;
        Ok(self.access.store().identity_providers().await?)
    }

    pub async fn remove_identity_provider(
        &self,
        caller: &Caller,
        issuer: &str,
    ) -> Result<(), Error> {
        caller.require_admin()?;
        match self.access.store().delete_identity_provider(issuer).await? {
            true => Ok(()),
            false => Err(Error::not_found(format!(
                "no identity provider has issuer `{issuer}`"
            ))),
        }
    }

    async fn endpoints_of(
        &self,
        provider: &IdentityProvider,
    ) -> Result<deputy_oidc::keys::SignInEndpoints, SignInError> {
        self.keys
            .sign_in_endpoints(&provider.issuer)
            .await
            .map_err(|error| SignInError::Internal(error.to_string()))
    }

    /// Where to send the browser to sign in at `provider` for the request `request_id` (carried as `state`).
    pub(crate) async fn upstream_authorization_url(
        &self,
        provider: &IdentityProvider,
        request_id: &str,
        login: &UpstreamLogin,
    ) -> Result<String, SignInError> {
        let endpoints = self.endpoints_of(provider).await?;
        let mut url =
            url::Url::parse(&endpoints.authorization_endpoint).map_err(SignInError::internal)?;
        let mut scope = String::from("openid email profile");
        if let Some(groups) = &provider.groups_claim {
            scope.push(' ');
            scope.push_str(groups);
        }
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &self.callback_url())
            .append_pair("scope", &scope)
            .append_pair("state", request_id)
            .append_pair("nonce", &login.nonce)
            .append_pair(
                "code_challenge",
                &crate::pkce::challenge_of(&login.verifier),
            )
            .append_pair("code_challenge_method", "S256");
        Ok(url.to_string())
    }

    /// Redeems the provider's code, validates the ID token and returns the person it names, provisioned.
    pub(crate) async fn person_from_upstream(
        &self,
        provider: &IdentityProvider,
        code: &str,
        login: &UpstreamLogin,
    ) -> Result<Identity, SignInError> {
        let id_token = self.redeem_upstream_code(provider, code, login).await?;
        let audiences = [provider.client_id.clone()];
        let expected = Expected {
            issuer: &provider.issuer,
            audiences: &audiences,
            subject_claim: "sub",
            subject: None,
        };
        let claims = verify_foreign_jwt(&self.keys, &id_token, &expected)
            .await
            .map_err(|reason| SignInError::AccessDenied(format!("ID token refused: {reason}")))?;
        if claims.get("nonce").and_then(Value::as_str) != Some(login.nonce.as_str()) {
            return Err(SignInError::AccessDenied(
                "ID token refused: its nonce is not the one this sign-in sent".into(),
            ));
        }
        // OpenID Connect Core §3.1.3.7: with several audiences, the token must have been issued to Deputy.
        if let Some(party) = claims.get("azp")
            && party.as_str() != Some(provider.client_id.as_str())
        {
            return Err(SignInError::AccessDenied(
                "ID token refused: it was issued to another client (`azp`)".into(),
            ));
        }
        let user_name = user_name(provider, &claims)?;
        let person = self.provision(provider, &user_name, &claims).await?;
        self.access.publish().await?;
        Ok(person)
    }

    async fn redeem_upstream_code(
        &self,
        provider: &IdentityProvider,
        code: &str,
        login: &UpstreamLogin,
    ) -> Result<String, SignInError> {
        let endpoints = self.endpoints_of(provider).await?;
        // RFC 6749 §2.3.1: the client id and secret are form-encoded before they go into HTTP Basic.
        let encode =
            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let callback_url = self.callback_url();
        let response = self
            .keys
            .http()
            .post(&endpoints.token_endpoint)
            .basic_auth(
                encode(&provider.client_id),
                Some(encode(&provider.client_secret)),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", callback_url.as_str()),
                ("code_verifier", login.verifier.as_str()),
            ])
            .send()
            .await
            .map_err(|error| {
                SignInError::Internal(format!("the identity provider is unreachable: {error}"))
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(SignInError::AccessDenied(format!(
                "the identity provider refused the code ({status}): {body}"
            )));
        }
        let tokens: UpstreamTokens = response.json().await.map_err(|error| {
            SignInError::AccessDenied(format!(
                "the identity provider's answer is unreadable: {error}"
            ))
        })?;
        tokens.id_token.ok_or_else(|| {
            SignInError::AccessDenied("the identity provider returned no ID token".into())
        })
    }

    /// The user named `user_name`: refused if disabled, created if new; then their provider-managed groups.
    async fn provision(
        &self,
        provider: &IdentityProvider,
        user_name: &str,
        claims: &Map<String, Value>,
    ) -> Result<Identity, SignInError> {
        let store = self.access.store();
        let person = match store.find_identity(IdentityKind::User, user_name).await? {
            Some(person) if !person.active => {
                return Err(SignInError::AccessDenied(format!(
                    "user `{user_name}` is disabled in this workspace"
                )));
            }
            Some(person) => person,
            None => {
                let text =
                    |claim: &str| claims.get(claim).and_then(Value::as_str).map(str::to_owned);
                let new = NewIdentity {
                    kind: IdentityKind::User,
                    name: user_name.to_owned(),
                    display_name: text("name").unwrap_or_else(|| user_name.to_owned()),
                    given_name: text("given_name"),
                    family_name: text("family_name"),
                    external_id: None,
                    active: true,
                };
                let person = store.create_identity(new, now_millis()).await?;
                if let Some(users) = store
                    .find_identity(IdentityKind::Group, USERS_GROUP)
                    .await?
                {
                    store.add_group_member(users.id, person.id).await?;
                }
                person
            }
        };
        if let Some(groups_claim) = &provider.groups_claim {
            let groups = group_names(claims, groups_claim)?;
            self.sync_groups(provider, &person, &groups).await?;
        }
        Ok(person)
    }

    /// Makes the person's membership of provider-managed groups exactly `names`: new groups are created as
    /// provider-managed; groups that exist and are not provider-managed (SCIM's, the built-in ones) are left alone.
    async fn sync_groups(
        &self,
        provider: &IdentityProvider,
        person: &Identity,
        names: &[String],
    ) -> Result<(), SignInError> {
        let store = self.access.store();
        let managed: HashSet<_> = store.idp_managed_groups().await?.into_iter().collect();
        let mut wanted = HashSet::new();
        for name in names {
            let group = match store.find_identity(IdentityKind::Group, name).await? {
                Some(group) if managed.contains(&group.id) => group,
                Some(_) => continue,
                None => {
                    let new = NewIdentity {
                        kind: IdentityKind::Group,
                        name: name.clone(),
                        display_name: name.clone(),
                        given_name: None,
                        family_name: None,
                        external_id: None,
                        active: true,
                    };
                    let group = store.create_identity(new, now_millis()).await?;
                    store
                        .mark_idp_managed_group(group.id, &provider.issuer)
                        .await?;
                    group
                }
            };
            store.add_group_member(group.id, person.id).await?;
            wanted.insert(group.id);
        }
        for group in store.direct_groups(person.id).await? {
            if managed.contains(&group.id) && !wanted.contains(&group.id) {
                store.remove_group_member(group.id, person.id).await?;
            }
        }
        Ok(())
    }
}

/// The user name an ID token names: the configured claim; an email only when the provider says it is verified;
/// within the allowed domains, if any.
fn user_name(
    provider: &IdentityProvider,
    claims: &Map<String, Value>,
) -> Result<String, SignInError> {
    let claim = provider.username_claim.as_str();
    let name = claims
        .get(claim)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| SignInError::AccessDenied(format!("the ID token has no `{claim}` claim")))?;
    if claim == DEFAULT_USERNAME_CLAIM {
        let verified = match claims.get("email_verified") {
            Some(Value::Bool(verified)) => *verified,
            Some(Value::String(text)) => text == "true",
            _ => false,
        };
        if !verified {
            return Err(SignInError::AccessDenied(format!(
                "the identity provider has not verified the email `{name}`"
            )));
        }
    }
    if !provider.allowed_domains.is_empty() {
        let domain = name
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_ascii_lowercase())
            .unwrap_or_default();
        if !provider.allowed_domains.contains(&domain) {
            return Err(SignInError::AccessDenied(format!(
                "`{name}` is not in a domain allowed to sign in here"
            )));
        }
    }
    Ok(name.to_owned())
}

/// The groups claim as a list of names: a JSON array of strings, or one string. Absent means no groups.
fn group_names(claims: &Map<String, Value>, claim: &str) -> Result<Vec<String>, SignInError> {
    let names: Vec<String> = match claims.get(claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(name)) => vec![name.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    SignInError::AccessDenied(format!("the `{claim}` claim lists a non-string"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(SignInError::AccessDenied(format!(
                "the `{claim}` claim is not a list of group names"
            )));
        }
    };
    if names.len() > MAX_GROUPS {
        return Err(SignInError::AccessDenied(format!(
            "the `{claim}` claim lists more than {MAX_GROUPS} groups"
        )));
    }
    Ok(names
        .into_iter()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider(claim: &str, domains: &[&str]) -> IdentityProvider {
        IdentityProvider {
            issuer: "https://idp.example".into(),
            client_id: "deputy".into(),
            client_secret: "secret".into(),
            groups_claim: Some("groups".into()),
            username_claim: claim.into(),
            allowed_domains: domains.iter().map(|domain| domain.to_string()).collect(),
            created_ms: 0,
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn an_email_becomes_the_user_name_only_when_verified() {
        let email = provider("email", &[]);
        let verified =
            claims(json!({"sub": "8d1c", "email": "alice@example.com", "email_verified": true}));
        assert_eq!(user_name(&email, &verified).unwrap(), "alice@example.com");
        let unverified =
            claims(json!({"sub": "8d1c", "email": "alice@example.com", "email_verified": false}));
        assert!(user_name(&email, &unverified).is_err());
        let missing = claims(json!({"sub": "8d1c"}));
        assert!(user_name(&email, &missing).is_err());
    }

    #[test]
    fn another_claim_and_allowed_domains() {
        let upn = provider("preferred_username", &["example.com"]);
        let inside = claims(json!({"preferred_username": "bob@Example.com"}));
        assert_eq!(user_name(&upn, &inside).unwrap(), "bob@Example.com");
        let outside = claims(json!({"preferred_username": "bob@example.com.evil.example"}));
        assert!(user_name(&upn, &outside).is_err());
    }

    #[test]
    fn groups_claims_are_lists_of_names() {
        let listed = claims(json!({"groups": ["analysts", " ", "admins"]}));
        assert_eq!(
            group_names(&listed, "groups").unwrap(),
            vec!["analysts", "admins"]
        );
        assert_eq!(
            group_names(&claims(json!({})), "groups").unwrap(),
            Vec::<String>::new()
        );
        assert!(group_names(&claims(json!({"groups": [1]})), "groups").is_err());
        assert!(group_names(&claims(json!({"groups": {"a": 1}})), "groups").is_err());
    }
}
