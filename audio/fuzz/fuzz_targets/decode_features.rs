//! Decode + features on arbitrary bytes: must return Ok or a typed error,
//! never panic, hang or allocate without bound.
//!
//! Run: `cd audio/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode_features`
//! (seed the corpus with small files from `../tests/fixtures`).
#![no_main]

use birdsong_audio::{WindowConfig, WindowStream, clip_features_bytes, probe_reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Short windows so that small inputs reach the feature code.
    let cfg = WindowConfig {
        length_s: 0.5,
        hop_s: 0.25,
        min_last_s: 0.1,
    };
    let _ = probe_reader(std::io::Cursor::new(data.to_vec()));
    if let Ok(stream) = WindowStream::from_bytes(data.to_vec(), &cfg) {
        // Bound the work per input (a tiny header can announce hours).
        for w in stream.take(64) {
            if let Ok(w) = w {
                assert!(w.features.iter().all(|v| v.is_finite()));
                assert!(w.end_s > w.start_s);
            }
        }
    }
    let _ = clip_features_bytes(data.to_vec());
});
