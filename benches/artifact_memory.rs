//! Memory while a big artifact goes through the server: the release `runway` binary is
//! started on SQLite under a temporary folder, one job uploads an artifact of
//! `RUNWAY_BENCH_ARTIFACT_BYTES` (default 1 GiB, streamed with chunked encoding), the job
//! that needs it downloads it with its own token, and the server's resident memory
//! (`/proc/<pid>/status`, sampled every 10 ms) is printed before, at its peak during each
//! transfer, and as growth. The bytes are compared by SHA-256. Target: growth < 64 MiB.
//!
//! Run: `cargo bench --bench artifact_memory` (Linux).

mod common;

use common::{artifact_round_trip, mib, start_runway};

#[tokio::main]
async fn main() {
    let size: u64 = std::env::var("RUNWAY_BENCH_ARTIFACT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_runway(&[
        ("RUNWAY_DATA_DIR", dir.path().display().to_string()),
        ("RUNWAY_LONG_POLL_TIMEOUT", "0".into()),
        (
            "RUNWAY_MAX_ARTIFACT_SIZE_BYTES",
            (size + (1 << 20)).to_string(),
        ),
    ])
    .await;
    let trip = artifact_round_trip(&server, size).await;

    println!(
        "artifact: {size} bytes ({:.0} MiB), SQLite, local object store",
        size as f64 / 1048576.0
    );
    for (name, t) in [("upload:  ", &trip.upload), ("download:", &trip.download)] {
        println!(
            "{name} {:.2} s, {:.0} MB/s; server RSS {:.1} MiB before, {:.1} MiB at peak: growth {:.1} MiB",
            t.time.as_secs_f64(),
            t.mb_per_s(size),
            mib(t.before_kib),
            mib(t.peak_kib),
            mib(t.growth_kib())
        );
    }
    let growth = trip
        .upload
        .peak_kib
        .max(trip.download.peak_kib)
        .saturating_sub(trip.upload.before_kib);
    println!(
        "target: growth < 64 MiB: {} ({:.1} MiB)",
        if growth < 64 * 1024 { "met" } else { "NOT met" },
        mib(growth)
    );
    assert!(trip.identical, "downloaded bytes are the uploaded bytes");
    println!("bytes: identical (sha256)");
}
