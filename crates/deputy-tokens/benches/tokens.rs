//! Throughput of the token hot paths on one thread: `cargo bench -p deputy-tokens`.
//!
//! A plain `main` (no harness): each figure is operations per second over a fixed wall-clock budget, after a short
//! warm-up. The whole run takes about ten seconds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use deputy_core::ScopeSet;
use deputy_tokens::{
    AccessClaims, Actor, ExchangeRequest, KeyRing, ScopeMode, SecretHash, TokenIssuer, exchange,
    generate_personal_access_token,
};

const NOW: i64 = 1_800_000_000;
const BUDGET: Duration = Duration::from_secs(2);

/// Runs `op` repeatedly for `BUDGET` and returns operations per second.
fn rate(mut op: impl FnMut()) -> f64 {
    for _ in 0..200 {
        op();
    }
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < BUDGET {
        for _ in 0..100 {
            op();
        }
        count += 100;
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn report(name: &str, per_second: f64) {
    println!(
        "{name:<44} {per_second:>12.0} /s  {:>9.2} µs/op",
        1e6 / per_second
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = TokenIssuer::new(
        "https://deputy.bench/oidc",
        "https://deputy.bench",
        KeyRing::generate(NOW, 3600)?,
    );
    let mut claims = AccessClaims::issue(
        &issuer.issuer,
        &issuer.audience,
        "alice@example.com",
        ScopeSet::parse("sql vector-search serving genie")?,
        NOW,
        3600,
    )?;
    claims.act = Actor::from_chain(&["agent-b", "agent-a"]);
    let token = issuer.sign(&claims)?;
    println!("token length: {} bytes", token.len());

    report(
        "sign",
        rate(|| {
            black_box(issuer.sign(black_box(&claims)).ok());
        }),
    );
    report(
        "verify",
        rate(|| {
            black_box(issuer.verify(black_box(&token), NOW + 1).ok());
        }),
    );

    let request = ExchangeRequest {
        scope: Some(ScopeSet::parse("vector-search sql.statement-execution")?),
        actor: Some(Actor::new("endpoint-sp")),
        audience: issuer.audience.clone(),
        client_id: None,
        mode: ScopeMode::Intersect,
    };
    report(
        "exchange rule only",
        rate(|| {
            black_box(exchange(black_box(&claims), &request, NOW + 1, 300).ok());
        }),
    );
    report(
        "exchange rule + sign",
        rate(|| {
            let issued = exchange(black_box(&claims), &request, NOW + 1, 300);
            black_box(issued.ok().and_then(|c| issuer.sign(&c).ok()));
        }),
    );
    report(
        "verify + exchange + sign (one OBO hop)",
        rate(|| {
            let subject = issuer.verify(black_box(&token), NOW + 1);
            let issued = subject
                .ok()
                .and_then(|s| exchange(&s, &request, NOW + 1, 300).ok());
            black_box(issued.and_then(|c| issuer.sign(&c).ok()));
        }),
    );

    let (pat, hash) = generate_personal_access_token()?;
    report(
        "personal access token hash + compare",
        rate(|| {
            black_box(hash == SecretHash::of(black_box(pat.expose())));
        }),
    );
    Ok(())
}
