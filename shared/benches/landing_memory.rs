//! Peak memory of landing one 10,000-record Kinesis batch of 1 KiB JSON payloads.
//! Prints the process's peak RSS (VmHWM) before and after, so the landing's own share shows.

mod common;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (event, payloads) = common::kinesis_event();
    drop(payloads);
    let before = vm_hwm_kib();
    let (records, compressed) = common::land(&event);
    let after = vm_hwm_kib();
    println!(
        "landing_memory: records={records} event_bytes={} compressed_bytes={compressed} peak_rss_before_kib={before} peak_rss_after_kib={after} landing_peak_increase_kib={}",
        event.len(),
        after - before
    );
}
