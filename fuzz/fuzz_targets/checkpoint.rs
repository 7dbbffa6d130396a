//! Checkpoint file bytes → checkpoint::load (from a temp file) → describe and
//! fraction_done on whatever loaded, as `cdp-backfill status` does.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use cdp_backfill::checkpoint;
use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        std::env::temp_dir().join(format!("cdp-fuzz-{}.checkpoint.json", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    if std::fs::write(p, data).is_err() {
        return;
    }
    if let Ok(Some(cp)) = checkpoint::load(p) {
        let f = checkpoint::fraction_done(&cp);
        assert!(f.is_nan() || (0.0..=1.0).contains(&f), "fraction_done {f}");
        let _ = checkpoint::describe(&cp);
    }
});
