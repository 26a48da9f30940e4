//! The sealed-record decoder (`MasterKey::unwrap`) on arbitrary bytes: never panics and never
//! accepts a record it did not wrap. The first input byte is the record name's length.

#![no_main]

use keyhaven::seal::{self, KdfParams, MasterKey};
use keyhaven::secret::SecretString;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn master_key() -> &'static MasterKey {
    static MASTER: OnceLock<(tempfile::TempDir, MasterKey)> = OnceLock::new();
    &MASTER
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let (_, master) = seal::init(
                dir.path(),
                &SecretString::new("fuzzing, not a secret".into()),
                KdfParams::MINIMUM,
                "111122223333",
                0,
            )
            .expect("seal");
            (dir, master)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let Some((&name_len, rest)) = data.split_first() else {
        return;
    };
    let (name, wrapped) = rest.split_at((name_len as usize).min(rest.len()));
    let master = master_key();
    assert!(
        master.unwrap(name, wrapped).is_err(),
        "forged a sealed record"
    );
    // What the master key wraps itself comes back, under that name only.
    let sealed = master.wrap(name, wrapped);
    let unwrapped = master.unwrap(name, &sealed).expect("own record unwraps");
    assert_eq!(unwrapped.expose(), wrapped);
    let mut other = name.to_vec();
    other.push(0);
    assert!(master.unwrap(&other, &sealed).is_err());
});
