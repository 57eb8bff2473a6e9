//! The scope parser: never panics; what it accepts prints back to a string that parses to the same set
//! (parse(display(x)) == x); parsing is a union over words, so it is insensitive to order and repetition; and a set
//! built from any bit pattern round-trips too.

#![no_main]

use deputy_core::{ApiScope, ScopeSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Any set, from the first 4 bytes as a bit pattern over ApiScope::ALL.
    if data.len() >= 4 {
        let bits = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let set: ScopeSet = ApiScope::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, scope)| scope)
            .collect();
        let printed = set.to_string();
        assert_eq!(ScopeSet::parse(&printed), Ok(set), "{printed}");
        for scope in ApiScope::ALL {
            assert_eq!(set.contains(scope), bits & (1 << scope as u32) != 0);
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ScopeSet::parse(text) {
        Ok(set) => {
            let printed = set.to_string();
            assert_eq!(ScopeSet::parse(&printed), Ok(set), "{text:?} -> {printed:?}");
            let mut words: Vec<&str> = text.split_whitespace().collect();
            words.reverse();
            words.extend(text.split_whitespace());
            assert_eq!(ScopeSet::parse(&words.join(" ")), Ok(set), "{text:?} reordered");
            for word in text.split_whitespace() {
                let part = ScopeSet::parse(word).expect("each word of an accepted text parses");
                assert!(part.is_subset_of(set));
            }
        }
        Err(_) => {
            // Refused: some word is unknown on its own, never the combination.
            assert!(text.split_whitespace().any(|word| ScopeSet::parse(word).is_err()));
        }
    }
});
