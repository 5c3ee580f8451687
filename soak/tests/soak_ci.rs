//! The soak's CI profile, in a test binary of its own: it stops and starts a
//! PostgreSQL server (a private one; the shared server is left alone) and cuts Cytube
//! connections, which must not overlap other tests' databases or simulators.

use daz_soak::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ci_profile_loses_and_duplicates_nothing() {
    let opts = Options::ci();
    let mut out = std::io::stdout();
    let report = run(opts.clone(), &mut out).await.expect("the soak runs");
    println!("\n{report}");
    assert!(report.passed(), "{:?}", report.failures());
    // The faults really happened, so the pass means something.
    assert_eq!(report.pg_restarts, opts.pg_restarts, "{report}");
    assert!(report.drops >= 1 && report.bot_reconnects >= 1, "{report}");
    assert!(report.reloads_by_kind.iter().all(|n| *n >= 1), "{report}");
    assert!(report.verdict.published > 1000, "{report}");
}
