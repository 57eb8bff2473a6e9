//! HTTPS against a loopback TLS server whose certificate a test CA signed: trusted through a CA bundle, refused
//! without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct TestCa {
    pem: String,
    server: ServerConfig,
}

fn test_ca() -> TestCa {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    TestCa {
        pem: ca_cert.pem(),
        server,
    }
}

/// Answers every TLS connection with one fixed HTTP response.
async fn serve_tls(config: ServerConfig) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(socket).await else {
                    return;
                };
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_works_with_the_ca_bundle_and_fails_without_it() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &ca.pem).unwrap();
    let port = serve_tls(ca.server).await;
    let url = format!("https://localhost:{port}/");

    let trusting = deputy_outbound::client_builder_trusting(&bundle)
        .unwrap()
        .build()
        .unwrap();
    let answer = trusting.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "hello");

    let system_roots_only = reqwest::Client::builder()
        .tls_backend_rustls()
        .build()
        .unwrap();
    let refused = system_roots_only.get(&url).send().await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
}

#[test]
fn a_named_bundle_that_cannot_be_used_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = deputy_outbound::client_builder_trusting(&dir.path().join("none.pem"));
    assert!(matches!(
        missing,
        Err(deputy_outbound::OutboundError::Bundle { .. })
    ));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let refused = deputy_outbound::client_builder_trusting(&empty);
    assert!(matches!(
        refused,
        Err(deputy_outbound::OutboundError::EmptyBundle(_)
            | deputy_outbound::OutboundError::Bundle { .. })
    ));
}
