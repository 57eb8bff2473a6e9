//! One module per console section. Handlers read the request, call the public API as the signed-in person, and
//! render; they hold no state of their own.

pub mod access;
pub mod activity;
pub mod admin;
pub mod agents;
pub mod assets;
pub mod sign_in;
pub mod stream;
