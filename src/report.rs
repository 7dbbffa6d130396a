//! The run report (`--report FILE.html`): one self-contained HTML page — inline CSS and
//! inline SVG drawn here, no script, no fonts, no network fetch — with the run's figures,
//! charts of its time series and histograms, and its settings.
//!
//! The settings are listed field by field from [`RunConfig`] ([`settings`]); the API key
//! is never one of them (only whether one was given). Every text that comes from the
//! user (paths, reasons, messages) is HTML-escaped.

use std::fmt::Write as _;

use crate::config::{Endpoint, RunConfig};
use crate::progress::{clock, thousands, Recorded, Sample};
use crate::source::SourceOptions;
use crate::summary::{Outcome, Summary};

/// The run's settings as (name, value) rows, in the order the report lists them.
pub fn settings(cfg: &RunConfig, src: &SourceOptions) -> Vec<(&'static str, String)> {
    let paths = |v: &[std::path::PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let opt = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or("—".to_string(), |p| p.display().to_string())
    };
    let secs = |d: std::time::Duration| format!("{} s", d.as_secs_f64());
    let endpoint = match &cfg.endpoint {
        Endpoint::Local => "local (built-in receiver on loopback)".to_string(),
        Endpoint::Url(u) => crate::config::strip_userinfo(u),
    };
    vec![
        ("inputs", paths(&cfg.inputs)),
        ("mapping", cfg.mapping_path.display().to_string()),
        ("endpoint", endpoint),
        (
            "API key",
            if cfg.api_key.is_some() {
                "given (not shown)"
            } else {
                "none"
            }
            .to_string(),
        ),
        ("dry run", yes(cfg.dry_run)),
        (
            "format",
            src.format
                .map_or("from file names".to_string(), |f| f.as_str().to_string()),
        ),
        ("CSV delimiter", show_byte(src.csv.delimiter)),
        ("CSV quote", show_byte(src.csv.quote)),
        ("CSV header row", yes(src.csv.has_header)),
        (
            "rate",
            format!("{} requests/s", thousands(cfg.rate_per_sec as u64)),
        ),
        (
            "events rate",
            cfg.events_rate_per_sec
                .map_or("unlimited".to_string(), |r| {
                    format!("{} calls/s", thousands(r as u64))
                }),
        ),
        ("concurrency", cfg.concurrency.to_string()),
        ("http version", cfg.http_version.to_string()),
        (
            "max request bytes",
            thousands(cfg.limits.max_request_bytes as u64),
        ),
        (
            "max call bytes",
            thousands(cfg.limits.max_call_bytes as u64),
        ),
        ("max record bytes", thousands(cfg.max_record_bytes as u64)),
        ("max retries", cfg.max_retries.to_string()),
        (
            "backoff",
            format!("{} … {}", secs(cfg.backoff_base), secs(cfg.backoff_cap)),
        ),
        ("connect timeout", secs(cfg.connect_timeout)),
        ("request timeout", secs(cfg.request_timeout)),
        (
            "gzip",
            cfg.gzip
                .map_or("no".to_string(), |l| format!("yes (level {l})")),
        ),
        ("strict mode", yes(cfg.strict)),
        (
            "sentAt",
            if cfg.sent_at { "now" } else { "not set" }.to_string(),
        ),
        ("rejects file", cfg.rejects_path.display().to_string()),
        ("checkpoint", opt(&cfg.checkpoint)),
        ("restart", yes(cfg.restart)),
        ("output", opt(&cfg.output)),
        ("local record", opt(&cfg.local_record)),
        ("rows per chunk", thousands(cfg.chunk_rows as u64)),
        ("tool version", env!("CARGO_PKG_VERSION").to_string()),
    ]
}

/// Values cleaned, dropped or kept as text per column (with examples), and what the
/// mapping never reached: nothing changed or missed goes unsaid.
fn values_and_mapping(s: &Summary) -> String {
    let mut h = String::new();
    h.push_str(r#"<section class="panel" style="margin-top:16px"><h2>Values fixed and mapping coverage</h2>"#);
    if s.values_fixed.is_empty() {
        h.push_str(r#"<p class="note">No value was cleaned, dropped or kept as text.</p>"#);
    } else {
        h.push_str(r#"<table><tr><th>column</th><th class="n">cleaned</th><th class="n">omitted</th><th class="n">null</th><th class="n">kept as text</th><th>examples</th></tr>"#);
        for (col, v) in &s.values_fixed {
            let examples: Vec<String> = v
                .examples
                .iter()
                .map(|e| format!("{} row {}: {:?} {}", e.source, e.row, e.value, e.fix))
                .collect();
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>"#,
                esc(col),
                thousands(v.cleaned),
                thousands(v.omitted),
                thousands(v.nulled),
                thousands(v.kept),
                esc(&examples.join("; "))
            );
        }
        h.push_str("</table>");
    }
    let coverage = crate::map::coverage::Coverage {
        never_matched: s.never_matched.clone(),
        unmapped_keys: s.unmapped_keys.clone(),
    };
    if coverage.is_empty() {
        h.push_str(r#"<p class="note">Every mapped column and path had a value in some row.</p>"#);
    } else {
        h.push_str("<ul>");
        for line in coverage.lines() {
            let _ = write!(h, "<li>{}</li>", esc(&line));
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>");
    h
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn show_byte(b: u8) -> String {
    match b {
        b'\t' => "tab".to_string(),
        b' ' => "space".to_string(),
        _ => (b as char).to_string(),
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn bytes(v: u64) -> String {
    let v = v as f64;
    match v {
        _ if v >= 1e9 => format!("{:.2} GB", v / 1e9),
        _ if v >= 1e6 => format!("{:.1} MB", v / 1e6),
        _ if v >= 1e3 => format!("{:.1} kB", v / 1e3),
        _ => format!("{v} B"),
    }
}

/// A short number for an axis: 1.5k, 2M.
fn short(v: f64) -> String {
    let a = v.abs();
    let (d, suffix) = match a {
        _ if a >= 1e9 => (1e9, "G"),
        _ if a >= 1e6 => (1e6, "M"),
        _ if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let x = v / d;
    if (x - x.round()).abs() < 1e-9 {
        format!("{}{suffix}", x.round())
    } else {
        format!("{x:.1}{suffix}")
    }
}

/// A round step that cuts `0..max` into about five intervals.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    }
}

const W: f64 = 1040.0;
const H: f64 = 260.0;
const L: f64 = 64.0;
const R: f64 = 16.0;
const T: f64 = 14.0;
const B: f64 = 40.0;

/// A line series: name, colour, points (x, y).
struct Line<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
    fill: bool,
    /// Dashed: a level (count), not a rate.
    dash: bool,
}

/// A time chart with a grid, axes and a legend.
fn line_chart(lines: &[Line], y_unit: &str) -> String {
    let xmax = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let ymax_data = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let ystep = nice_step(ymax_data.max(1.0));
    let ymax = (ymax_data / ystep).ceil().max(1.0) * ystep;
    let xstep = nice_step(xmax);
    let (pw, ph) = (W - L - R, H - T - B);
    let x = |v: f64| L + v / xmax * pw;
    let y = |v: f64| T + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" width="100%" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" class="ylab">{}</text>"##,
            W - R,
            L - 8.0,
            y(v) + 4.0,
            short(v),
            y = y(v)
        );
        v += ystep;
    }
    let mut t = 0.0;
    while t <= xmax + 1e-9 {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{T}" y2="{}" class="grid"/><text x="{x:.1}" y="{}" class="xlab">{}</text>"##,
            T + ph,
            T + ph + 18.0,
            clock(t),
            x = x(t)
        );
        t += xstep;
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" class="unit">{}</text><text x="{}" y="{}" class="unit" text-anchor="end">elapsed (m:ss)</text>"##,
        L + 4.0,
        T + 12.0,
        esc(y_unit),
        W - R,
        H - 4.0
    );
    for l in lines {
        if l.points.is_empty() {
            continue;
        }
        let mut d = String::new();
        for (i, (px, py)) in l.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { "L" },
                x(*px),
                y(*py)
            );
        }
        if l.fill {
            let (first, last) = (l.points[0].0, l.points[l.points.len() - 1].0);
            let _ = write!(
                s,
                r#"<path d="{d}L{:.1},{:.1}L{:.1},{:.1}Z" fill="{}" fill-opacity="0.15" stroke="none"/>"#,
                x(last),
                y(0.0),
                x(first),
                y(0.0),
                l.color
            );
        }
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"{}/>"#,
            l.color,
            if l.dash {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            }
        );
    }
    s.push_str("</svg>");
    let mut legend = String::from(r#"<div class="legend">"#);
    for l in lines {
        let _ = write!(
            legend,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            l.color,
            esc(l.name)
        );
    }
    legend.push_str("</div>");
    legend + &s
}

/// Vertical bars with a label under each.
fn bar_chart(bars: &[(String, u64)], color: &str, x_unit: &str, w: f64) -> String {
    let ymax_data = bars.iter().map(|b| b.1).max().unwrap_or(0) as f64;
    let ystep = nice_step(ymax_data.max(1.0));
    let ymax = (ymax_data / ystep).ceil().max(1.0) * ystep;
    let (pw, ph) = (w - L - R, H - T - B);
    let y = |v: f64| T + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {w} {H}" width="100%" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" class="ylab">{}</text>"##,
            w - R,
            L - 8.0,
            y(v) + 4.0,
            short(v),
            y = y(v)
        );
        v += ystep;
    }
    let n = bars.len().max(1) as f64;
    let slot = pw / n;
    let label_every = (n * 56.0 / (w - L - R)).ceil().max(1.0) as usize;
    for (i, (label, count)) in bars.iter().enumerate() {
        let bx = L + i as f64 * slot + slot * 0.1;
        let by = y(*count as f64);
        let _ = write!(
            s,
            r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" rx="2" fill="{color}"><title>{}: {}</title></rect>"#,
            slot * 0.8,
            (T + ph - by).max(0.0),
            esc(label),
            thousands(*count)
        );
        if i % label_every == 0 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" class="xlab">{}</text>"#,
                L + (i as f64 + 0.5) * slot,
                T + ph + 18.0,
                esc(label)
            );
        }
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" class="unit" text-anchor="end">{}</text></svg>"##,
        w - R,
        H - 4.0,
        esc(x_unit)
    );
    s
}

/// Horizontal bars, one per named count, largest first.
fn hbar_chart(items: &[(String, u64)], color: &str) -> String {
    let max = items.iter().map(|i| i.1).max().unwrap_or(1).max(1) as f64;
    let row = 30.0;
    let label_w = 260.0;
    let h = row * items.len() as f64 + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {h}" width="100%" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    for (i, (name, count)) in items.iter().enumerate() {
        let y = 5.0 + i as f64 * row;
        let w = (W - label_w - 120.0) * *count as f64 / max;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="ylab">{}</text><rect x="{label_w}" y="{:.1}" width="{:.1}" height="{:.1}" rx="3" fill="{color}"/><text x="{:.1}" y="{:.1}" class="val">{}</text>"#,
            label_w - 10.0,
            y + row * 0.62,
            esc(name),
            y + 4.0,
            w.max(2.0),
            row - 8.0,
            label_w + w.max(2.0) + 8.0,
            y + row * 0.62,
            thousands(*count)
        );
    }
    s.push_str("</svg>");
    s
}

/// Rates per interval between consecutive samples, at each interval's end.
fn rates(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].t > w[0].t)
        .map(|w| {
            (
                w[1].t,
                f(&w[1]).saturating_sub(f(&w[0])) as f64 / (w[1].t - w[0].t),
            )
        })
        .collect()
}

const CSS: &str = r#"
:root{--fg:#1d2433;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;--accent:#3d63dd}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1120px;margin:0 auto;padding:28px 24px 48px}
header{display:flex;align-items:baseline;gap:14px;flex-wrap:wrap;margin-bottom:6px}
h1{font-size:22px;margin:0}
h2{font-size:15px;margin:0 0 10px;font-weight:600}
.sub{color:var(--muted);margin:0 0 20px}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.ok{background:#dcfae6;color:#067647}.warn{background:#fef0c7;color:#93370d}.bad{background:#fee4e2;color:#b42318}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin-bottom:16px}
.card,.panel{background:var(--card);border:1px solid var(--line);border-radius:10px}
.card{padding:12px 14px}
.card b{display:block;font-size:22px;font-variant-numeric:tabular-nums}
.card span{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.panel{padding:14px 16px 10px;margin-bottom:16px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.grid2 .panel{margin-bottom:0}
.note{color:var(--muted);font-size:12px;margin:2px 0 8px}
.stopped{background:#fee4e2;border:1px solid #fda29b;color:#7a271a;border-radius:10px;padding:10px 14px;margin-bottom:16px;white-space:pre-wrap}
svg text{font:11px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#475467}
svg .ylab{text-anchor:end}svg .xlab{text-anchor:middle}svg .unit{fill:#98a2b3}svg .val{fill:#1d2433;font-weight:600}
svg .grid{stroke:#eaecf0;stroke-width:1}
.legend{display:flex;gap:16px;font-size:12px;color:#475467;margin-bottom:2px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
td{padding:4px 8px;border-bottom:1px solid #f2f4f7;vertical-align:top}
td:first-child{color:var(--muted);width:42%}
td.n{text-align:right}
tr.sub td:first-child{padding-left:24px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
footer{color:var(--muted);font-size:12px;margin-top:20px}
"#;

/// The backfill this run is part of: whether it resumed and from where, the rows this
/// run covered, and the totals of every run.
fn backfill_panel(h: &mut String, b: &crate::summary::BackfillSummary) {
    let t = thousands;
    let _ = write!(
        h,
        r#"<section class="panel"><h2>The whole backfill</h2><p class="note">{} · checkpoint <code>{}</code></p><table>"#,
        esc(&b.name),
        esc(&b.checkpoint)
    );
    let this_run = if b.this_run_last_row >= b.this_run_first_row {
        format!(
            "rows {}–{}",
            t(b.this_run_first_row),
            t(b.this_run_last_row)
        )
    } else {
        "no rows".to_string()
    };
    let rows = [
        (
            "this run",
            match &b.resumed_from {
                Some(from) => format!("resumed from {from}"),
                None if b.resumed => "resumed".to_string(),
                None => "started the backfill".to_string(),
            },
        ),
        ("this run's segment", this_run),
        ("runs", t(b.runs)),
        ("rows done (all runs)", t(b.rows_done)),
        ("calls delivered (all runs)", t(b.calls_delivered)),
        ("rows rejected (all runs)", t(b.rows_rejected)),
        ("requests (all runs)", t(b.requests)),
        (
            "complete",
            if b.complete { "yes" } else { "no" }.to_string(),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(h, "<tr><td>{k}</td><td class=\"n\">{}</td></tr>", esc(&v));
    }
    h.push_str("</table></section>");
}

/// The whole page. `stopped` is the message the run stopped with, if it did not finish.
pub fn render(
    s: &Summary,
    rec: &Recorded,
    settings: &[(&'static str, String)],
    stopped: Option<&str>,
) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let rejected_total = s.rows_rejected_total.max(s.rows_rejected);
    let (badge, class) = match (s.outcome, stopped) {
        (Outcome::Completed, _) if rejected_total == 0 && s.calls_rejected_by_server == 0 => {
            ("completed", "ok")
        }
        (Outcome::Completed, _) => ("completed with rejects", "warn"),
        (Outcome::Interrupted, _) => ("interrupted", "warn"),
        (Outcome::AlreadyComplete, None) => ("already complete", "ok"),
        (Outcome::LimitReached | Outcome::Sampled, None) => (s.outcome.as_str(), "warn"),
        (o, _) => (o.as_str(), "bad"),
    };
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>cdp-backfill report</title><style>{CSS}</style></head><body><main><header><h1>cdp-backfill run report</h1><span class="badge {class}">{}</span></header><p class="sub">{}{} · {} input{} · generated {}</p>"#,
        esc(badge),
        if s.dry_run {
            "dry run (nothing sent) · "
        } else {
            ""
        },
        esc(&settings
            .iter()
            .find(|(k, _)| *k == "endpoint")
            .map_or(String::new(), |(_, v)| v.clone())),
        s.inputs,
        if s.inputs == 1 { "" } else { "s" },
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(m) = stopped {
        let _ = write!(
            h,
            r#"<div class="stopped"><b>Stopped:</b> {}</div>"#,
            esc(m)
        );
    }
    let calls_per_sec = if s.elapsed_secs > 0.0 {
        s.calls_delivered as f64 / s.elapsed_secs
    } else {
        0.0
    };
    let cards = [
        ("rows read", thousands(s.rows_read)),
        (
            if s.dry_run {
                "calls packed"
            } else {
                "calls delivered"
            },
            thousands(s.calls_delivered),
        ),
        ("rows rejected", thousands(s.rows_rejected)),
        ("elapsed", clock(s.elapsed_secs)),
        ("calls / s", thousands(calls_per_sec.round() as u64)),
        ("requests", thousands(s.requests)),
        ("sent", bytes(s.request_bytes)),
        (
            "retries · 429s",
            format!("{} · {}", thousands(s.retries), thousands(s.throttled)),
        ),
    ];
    h.push_str(r#"<section class="cards">"#);
    for (k, v) in cards {
        let _ = write!(
            h,
            "<div class=\"card\"><b>{}</b><span>{}</span></div>",
            esc(&v),
            k
        );
    }
    h.push_str("</section>");
    if let Some(note) = &s.note {
        let _ = write!(h, r#"<p class="note">{}</p>"#, esc(note));
    }
    if let Some(b) = &s.backfill {
        backfill_panel(&mut h, b);
    }

    let samples = &rec.samples;
    let short_run = samples.len() < 3;
    h.push_str(r#"<section class="panel"><h2>Calls delivered per second</h2>"#);
    if short_run {
        h.push_str(r#"<p class="note">The run was too short for a time series (one point per second).</p>"#);
    }
    h.push_str(&line_chart(
        &[Line {
            name: "calls/s",
            color: "#3d63dd",
            points: rates(samples, |x| x.calls_delivered),
            fill: true,
            dash: false,
        }],
        "calls/s",
    ));
    h.push_str("</section>");
    h.push_str(r#"<section class="panel"><h2>Retries and 429s</h2><p class="note">Per second; a 429 is the API asking to slow down, and is retried after its Retry-After.</p>"#);
    h.push_str(&line_chart(
        &[
            Line {
                name: "retries/s",
                color: "#f79009",
                points: rates(samples, |x| x.retries),
                fill: false,
                dash: false,
            },
            Line {
                name: "429s/s",
                color: "#d92d20",
                points: rates(samples, |x| x.throttled),
                fill: false,
                dash: false,
            },
            Line {
                name: "requests in flight",
                color: "#98a2b3",
                points: samples.iter().map(|x| (x.t, x.in_flight as f64)).collect(),
                fill: false,
                dash: true,
            },
        ],
        "per second",
    ));
    h.push_str("</section>");

    let sizes: Vec<(String, u64)> = rec
        .call_sizes
        .iter()
        .map(|&(lo, _, n)| (short(lo as f64) + "B", n))
        .collect();
    let fill: Vec<(String, u64)> = rec
        .request_fill
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("{}%", i * 5), n))
        .collect();
    h.push_str(r#"<div class="grid2"><section class="panel"><h2>Call sizes</h2><p class="note">Calls per size bucket (bytes of JSON; four buckets per doubling).</p>"#);
    h.push_str(&bar_chart(&sizes, "#7a5af8", "bytes per call ≥", 500.0));
    let _ = write!(
        h,
        r#"</section><section class="panel"><h2>Request fill</h2><p class="note">Requests by body size as a share of the {} byte limit.</p>"#,
        thousands(rec.max_request_bytes)
    );
    h.push_str(&bar_chart(
        &fill,
        "#12b76a",
        "share of max request bytes ≥",
        500.0,
    ));
    h.push_str("</section></div>");

    let mut reasons: Vec<(String, u64)> = s
        .rejected_by_reason
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if s.calls_rejected_by_server > 0 {
        reasons.push((
            "refused by the API (invalid)".into(),
            s.calls_rejected_by_server,
        ));
    }
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    h.push_str(r#"<section class="panel" style="margin-top:16px"><h2>Rejects by reason</h2>"#);
    if reasons.is_empty() {
        h.push_str(r#"<p class="note">No rows were rejected.</p>"#);
    } else {
        let _ = write!(
            h,
            r#"<p class="note">Each rejected row is a line in <code>{}</code> with its source, row and reason.</p>"#,
            esc(&s.rejects_file)
        );
        h.push_str(&hbar_chart(&reasons, "#f04438"));
    }
    h.push_str("</section>");
    h.push_str(&values_and_mapping(s));

    h.push_str(r#"<div class="grid2"><section class="panel"><h2>Figures</h2><table>"#);
    let row = |h: &mut String, k: &str, v: String, sub: bool| {
        let _ = write!(
            h,
            r#"<tr{}><td>{}</td><td class="n">{}</td></tr>"#,
            if sub { r#" class="sub""# } else { "" },
            esc(k),
            esc(&v)
        );
    };
    let outcome = s.note.clone().unwrap_or_else(|| s.outcome.to_string());
    row(&mut h, "outcome", outcome, false);
    row(&mut h, "inputs", thousands(s.inputs), false);
    row(&mut h, "rows read", thousands(s.rows_read), false);
    row(&mut h, "mapped", thousands(s.rows_mapped), true);
    row(&mut h, "rejected", thousands(s.rows_rejected), true);
    for (k, v) in &s.rejected_by_reason {
        row(&mut h, k, thousands(*v), true);
    }
    row(
        &mut h,
        "rows rejected, whole backfill",
        thousands(s.rows_rejected_total),
        false,
    );
    row(&mut h, "calls built", thousands(s.calls_built), false);
    for (k, v) in &s.calls_by_type {
        row(&mut h, k, thousands(*v), true);
    }
    row(
        &mut h,
        if s.dry_run {
            "calls packed"
        } else {
            "calls delivered"
        },
        thousands(s.calls_delivered),
        false,
    );
    row(
        &mut h,
        "calls refused by the API",
        thousands(s.calls_rejected_by_server),
        false,
    );
    row(
        &mut h,
        "calls undelivered",
        thousands(s.calls_undelivered),
        false,
    );
    row(&mut h, "requests", thousands(s.requests), false);
    row(
        &mut h,
        "request bytes",
        format!(
            "{} ({})",
            thousands(s.request_bytes),
            bytes(s.request_bytes)
        ),
        false,
    );
    row(&mut h, "retries", thousands(s.retries), false);
    row(&mut h, "429s", thousands(s.throttled), false);
    row(
        &mut h,
        "retries after no answer",
        thousands(s.retries_no_answer),
        false,
    );
    row(&mut h, "elapsed", format!("{:.2} s", s.elapsed_secs), false);
    row(
        &mut h,
        "rows per second",
        thousands(s.rows_per_sec.round() as u64),
        false,
    );
    row(&mut h, "rejects file", s.rejects_file.clone(), false);
    h.push_str(r#"</table></section><section class="panel"><h2>Settings</h2><table>"#);
    for (k, v) in settings {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td><code>{}</code></td></tr>"#,
            esc(k),
            esc(v)
        );
    }
    let _ = write!(
        h,
        r#"</table></section></div><footer>cdp-backfill {} · {} samples{}</footer></main></body></html>"#,
        env!("CARGO_PKG_VERSION"),
        samples.len(),
        rec.bytes_total
            .map_or(String::new(), |b| format!(" · {} of input", bytes(b)))
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_an_endpoint_url_never_reach_the_report() {
        assert_eq!(
            crate::config::strip_userinfo("https://k3y:x@cdp.customer.io/v1"),
            "https://cdp.customer.io/v1"
        );
        assert_eq!(
            crate::config::strip_userinfo("https://cdp.customer.io"),
            "https://cdp.customer.io"
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2_000_000.0), "2M");
    }

    #[test]
    fn report_is_self_contained_and_names_no_key() {
        let s = Summary {
            outcome: Outcome::Completed,
            rows_read: 10,
            rows_mapped: 9,
            rows_rejected: 1,
            rejected_by_reason: [("missing_user_id".to_string(), 1)].into_iter().collect(),
            ..Default::default()
        };
        let rec = Recorded {
            samples: (0..5)
                .map(|i| Sample {
                    t: i as f64,
                    calls_delivered: i * 100,
                    ..Default::default()
                })
                .collect(),
            call_sizes: vec![(256, 319, 7)],
            request_fill: vec![1; 20],
            max_request_bytes: 500_000,
            bytes_total: Some(1000),
        };
        let html = render(&s, &rec, &[("API key", "given (not shown)".into())], None);
        assert!(html.starts_with("<!doctype html>"));
        assert!(!html.contains("src=") && !html.contains("<script") && !html.contains("<link"));
        assert!(html.contains("missing_user_id"));
        assert!(html.contains("<svg"));
    }
}
