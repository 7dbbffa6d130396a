//! Trial runs that count and the whole backfill in every report (issue 21, items 5 and
//! 6), with real processes and the local receiver: a `--limit` trial sends the first rows
//! under the full run's messageIds and the same command without `--limit` sends the rest,
//! every row once; a `--sample` trial's rows go again with the same ids, as it says; a
//! resumed run's summary, `--summary-json` and HTML report show this run's segment, the
//! totals of every run, and where it resumed.

mod common;

use std::collections::HashSet;
use std::process::Output;

use cdp_backfill::map::message_id::message_id;
use common::*;

/// Three generated inputs of 1,500 rows in `export/`; returns the messageIds a single full
/// run gives their good rows, in input order (one track call a row).
fn export(w: &Workdir) -> Vec<String> {
    std::fs::create_dir(w.path("export")).unwrap();
    let mut ids = Vec::new();
    for (i, name) in ["part-1.csv", "part-2.csv", "part-3.csv"]
        .iter()
        .enumerate()
    {
        let p = w.path(&format!("export/{name}"));
        let g = cdp_backfill::generate::generate_file(&p, 1_500, 40 + i as u64).unwrap();
        let bad: HashSet<u64> = g.bad_rows.iter().map(|(r, _)| *r).collect();
        let seed = seed_of("", &p);
        ids.extend(
            (0..g.rows)
                .filter(|r| !bad.contains(r))
                .map(|r| message_id(seed, r, 0)),
        );
    }
    ids
}

fn backfill(w: &Workdir, url: &str, extra: &[&str]) -> Output {
    run(w
        .cmd()
        .args(["run", "export", "--mapping"])
        .arg(fixture("events.toml"))
        .args(["--endpoint", url])
        .args(extra))
}

fn summary(w: &Workdir) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap()
}

/// `--limit 2000` (across the first input into the second), `--limit 2000` again
/// (nothing), `--limit 3000` (rows 2,001–3,000), then the same command without a limit:
/// the receiver gets every good row's call exactly once, under the ids a single full run
/// gives them, and the last summary counts the whole backfill over its four runs.
#[test]
fn a_limit_trial_then_the_full_run_delivers_every_row_once_with_the_full_runs_ids() {
    let w = Workdir::new();
    let want = export(&w);
    let (server, record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let json = ["--summary-json", "s.json"];

    let o = backfill(&w, &url, &[&["--limit", "2000"][..], &json].concat());
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
    let s = summary(&w);
    assert_eq!(s["outcome"], "limit reached", "{s}");
    assert_eq!(s["rows_read"], 2_000, "{s}");
    assert!(
        s["note"]
            .as_str()
            .unwrap()
            .contains("without --limit sends the rest"),
        "{s}"
    );
    assert!(stderr(&o).contains("limit reached: the first 2,000 rows are done"));
    let first = recorded_calls(&record);
    let got = message_ids(&first);
    assert_eq!(first.len(), got.len(), "no id twice");
    // The trial's ids are the full run's first ones.
    let trial_good = s["rows_mapped"].as_u64().unwrap() as usize;
    assert_eq!(got, want[..trial_good].iter().cloned().collect());
    let cp: serde_json::Value = serde_json::from_slice(
        &std::fs::read(backfill_dir(w.dir()).join("checkpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cp["complete"], false);
    assert_eq!(cp["resume"]["input"], 1, "{cp}");
    assert_eq!(cp["resume"]["row"], 500, "{cp}");

    // The same limit again: nothing more.
    let o = backfill(&w, &url, &[&["--limit", "2000"][..], &json].concat());
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
    assert_eq!(summary(&w)["rows_read"], 0);
    assert_eq!(recorded_calls(&record).len(), first.len(), "nothing sent");

    // A larger limit: rows 2,001 to 3,000.
    let o = backfill(&w, &url, &[&["--limit", "3000"][..], &json].concat());
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
    let s = summary(&w);
    assert_eq!(s["rows_read"], 1_000, "{s}");
    assert_eq!(s["backfill"]["this_run_first_row"], 2_001, "{s}");
    assert_eq!(s["backfill"]["this_run_last_row"], 3_000, "{s}");

    // The full run: the rest.
    let o = backfill(&w, &url, &json);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let s = summary(&w);
    assert_eq!(s["outcome"], "completed", "{s}");
    assert_eq!(s["rows_read"], 1_500, "{s}");
    let b = &s["backfill"];
    assert_eq!(b["resumed"], true, "{s}");
    // The trial stopped at the last row of part-2.csv, before its reader saw the end.
    let from = b["resumed_from"].as_str().unwrap();
    assert!(
        from.starts_with("export/part-3.csv row 1 (")
            || from.starts_with("export/part-2.csv row 1,501 ("),
        "{s}"
    );
    assert_eq!(b["this_run_first_row"], 3_001, "{s}");
    assert_eq!(b["this_run_last_row"], 4_500, "{s}");
    assert_eq!(b["rows_done"], 4_500, "{s}");
    assert_eq!(b["calls_delivered"], want.len() as u64, "{s}");
    assert_eq!(b["runs"], 4, "{s}");
    assert_eq!(b["complete"], true, "{s}");
    let stats = server.shutdown();
    let calls = recorded_calls(&record);
    assert_eq!(stats.duplicate_message_ids, 0, "nothing was sent twice");
    assert_eq!(calls.len(), want.len());
    assert_eq!(
        message_ids(&calls),
        want.iter().cloned().collect::<HashSet<_>>()
    );
}

/// `--sample 10` sends rows 1, 11, 21, ... of each input under their real ids and moves
/// no checkpoint; it says the full run sends them again. The full run then sends every
/// row, and says how many calls of earlier trials go again: the receiver sees each
/// sampled call twice, with the same id, and every other call once.
#[test]
fn a_sample_trial_goes_again_with_the_same_ids_as_it_says() {
    let w = Workdir::new();
    let want = export(&w);
    let (server, record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let json = ["--summary-json", "s.json"];

    let o = backfill(&w, &url, &[&["--sample", "10"][..], &json].concat());
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
    let s = summary(&w);
    assert_eq!(s["outcome"], "sampled", "{s}");
    assert_eq!(s["rows_read"], 4_500, "{s}");
    let sampled = recorded_calls(&record);
    let sampled_ids = message_ids(&sampled);
    assert_eq!(sampled.len(), sampled_ids.len());
    // About one in ten (rows 1, 11, ... of each file, less the generator's bad rows).
    assert!((400..=450).contains(&sampled.len()), "{}", sampled.len());
    assert_eq!(s["calls_delivered"], sampled.len() as u64, "{s}");
    let all: HashSet<String> = want.iter().cloned().collect();
    assert!(sampled_ids.is_subset(&all), "under the full run's ids");
    assert!(
        stderr(&o).contains("the sampled ones go again with the same messageIds"),
        "{}",
        stderr(&o)
    );

    let o = backfill(&w, &url, &json);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let text = stderr(&o);
    assert!(
        text.contains(&format!("{} calls", sampled.len())) && text.contains("again"),
        "the full run says how many calls go again: {text}"
    );
    let stats = server.shutdown();
    assert_eq!(stats.duplicate_message_ids, sampled.len() as u64);
    let calls = recorded_calls(&record);
    assert_eq!(calls.len(), want.len() + sampled.len());
    assert_eq!(message_ids(&calls), all);
}

/// A backfill interrupted with Ctrl-C, then resumed with `--summary-json` and
/// `--report`: the text summary, the JSON and the HTML report each say it resumed and
/// from where, this run's rows, and the totals of both runs (which add up to the file).
#[test]
fn a_resumed_runs_summary_json_and_report_show_its_segment_and_the_whole_backfill() {
    let w = Workdir::new();
    std::fs::create_dir(w.path("export")).unwrap();
    let g = cdp_backfill::generate::generate_file(&w.path("export/events.csv"), 20_000, 9).unwrap();
    let (server, record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let slow = [
        "--rate",
        "4",
        "--concurrency",
        "1",
        "--max-request-bytes",
        "40000",
    ];
    let child = w
        .cmd()
        .args(["run", "export", "--mapping"])
        .arg(fixture("events.toml"))
        .args(["--endpoint", &url, "-q"])
        .args(slow)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    interrupt(child.id());
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    let cp: serde_json::Value = serde_json::from_slice(
        &std::fs::read(backfill_dir(w.dir()).join("checkpoint.json")).unwrap(),
    )
    .unwrap();
    let done = cp["resume"]["row"].as_u64().unwrap();
    assert!(done > 0 && done < 20_000, "{cp}");

    let o = backfill(
        &w,
        &url,
        &[
            &slow[2..],
            &["--summary-json", "s.json", "--report", "r.html"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let s = summary(&w);
    assert_eq!(
        s["rows_read"],
        20_000 - done,
        "this run's table: its own rows"
    );
    let b = &s["backfill"];
    let from = format!("export/events.csv row {}", thousands(done + 1));
    assert!(
        b["resumed_from"].as_str().unwrap().starts_with(&from),
        "{s}"
    );
    assert_eq!(b["this_run_first_row"], done + 1);
    assert_eq!(b["this_run_last_row"], 20_000);
    assert_eq!(b["rows_done"], 20_000);
    assert_eq!(b["rows_rejected"], g.bad_rows.len() as u64);
    assert_eq!(b["runs"], 2);
    assert_eq!(b["complete"], true);
    let calls = recorded_calls(&record);
    assert_eq!(
        b["calls_delivered"],
        calls.len() as u64,
        "every run's calls"
    );
    assert_eq!(calls.len() as u64, g.rows - g.bad_rows.len() as u64);

    let text = stderr(&o);
    let segment = format!("this run        rows {}–20,000", thousands(done + 1));
    assert!(text.contains(&format!("resumed from    {from}")), "{text}");
    assert!(text.contains(&segment), "{text}");
    assert!(text.contains("all 2 runs      20,000 rows done"), "{text}");

    let html = std::fs::read_to_string(w.path("r.html")).unwrap();
    assert!(html.contains("The whole backfill"), "{html}");
    assert!(html.contains(&from), "the report says where it resumed");
    assert!(html.contains(&format!("rows {}–20,000", thousands(done + 1))));
    server.shutdown();
}

fn thousands(n: u64) -> String {
    cdp_backfill::progress::thousands(n)
}
