//! Bytes from a peer on a mesh stream: decoding never panics, never claims more bytes than it was
//! given, and whatever decodes re-encodes to a frame that decodes to the same message (so a
//! placement document or event relayed onwards is unchanged).
#![no_main]

use cortex_proto::frame::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode(rest) {
        assert!(used > 0 && used <= rest.len());
        let again = encode(&msg);
        let (back, n) = decode(&again).expect("re-encoded frame decodes").expect("complete");
        assert_eq!(n, again.len());
        assert_eq!(back, msg);
        rest = &rest[used..];
    }
});
