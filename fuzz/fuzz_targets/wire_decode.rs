//! The cluster wire decoder (`broker::wire::Wire::decode`) on arbitrary
//! bytes, as any Redis pub/sub publisher could send them: never panics, and
//! whatever it accepts encodes back to something that decodes the same.
#![no_main]

use bytes::Bytes;
use connmix::broker::wire::Wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(w) = Wire::decode(Bytes::copy_from_slice(data)) {
        assert_eq!(Wire::decode(w.encode()), Some(w));
    }
});
