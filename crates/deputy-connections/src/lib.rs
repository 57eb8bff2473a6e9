//! Unity Catalog HTTP connections and the outbound calls made through them: where a connection lets a call go
//! ([`http`]), and the checked, audited call itself ([`external_function`]).
//!
//! **Invariants:** a connection's credential only ever goes to the connection's own origin (see [`http`]); no request
//! leaves through a connection before the caller's `USE_CONNECTION` was decided and the call audited.

pub mod external_function;
pub mod http;
