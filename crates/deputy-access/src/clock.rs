//! The wall clock, read in one place. Domain crates take the time as a parameter; the server supplies it from here.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now_seconds() -> i64 {
    now_millis() / 1000
}
