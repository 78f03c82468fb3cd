//! Peak memory of landing one 10,000-record Kinesis batch of 1 KiB JSON payloads.
//!
//! The event is generated and written to a file first; a fresh child process then reads the
//! raw event bytes (as the Lambda runtime holds them) and lands them, so the peak RSS it
//! reports is not inflated by the generator's own allocations.

mod common;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let event = std::fs::read(&args[i + 1]).unwrap();
        let baseline = status_kib("VmRSS:");
        let (records, compressed) = common::land(&event);
        let peak = status_kib("VmHWM:");
        println!(
            "landing_memory: records={records} event_bytes={} compressed_bytes={compressed} rss_with_event_kib={baseline} peak_rss_kib={peak} landing_peak_increase_kib={}",
            event.len(),
            peak.saturating_sub(baseline)
        );
        return;
    }
    let (event, _) = common::kinesis_event();
    let path = std::env::temp_dir().join(format!("bronze-bench-event-{}.json", std::process::id()));
    std::fs::write(&path, &event).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .arg(&path)
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(status.success());
}
