//! The top-level modules form a DAG that reads as the pipeline, lowest first. This test
//! reads `src/**/*.rs`, collects every `crate::<module>` path (and `super::super::...`
//! that climbs to the crate root) outside `#[cfg(test)]` code, and fails on an import
//! that points up the declared order or closes a cycle, naming the file and line.
//!
//! The order (a module may use those in its own layer or below, never above):

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. Modules in one layer may use each other, as long as no cycle forms.
const LAYERS: &[&[&str]] = &[
    &["config", "json", "timestamp"],
    &["source"],
    &["derive"],
    &["map"],
    &["pack"],
    &["send"],
    &["checkpoint"],
    &["serve"],
    &["progress"],
    &["summary"],
    &["report"],
    &["error"],
    &["pipeline"],
    &["validate", "inspect", "generate", "status", "migration"],
    &["cli"],
];

/// One use of another top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

/// The source with comments, strings and character literals blanked out (newlines
/// kept, so line numbers hold), so that neither `crate::` nor a brace inside them counts.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if (c == b'r' || (c == b'b' && next == Some(b'r')))
            && !prev_is_ident(b, i)
            && raw_string_start(b, i).is_some()
        {
            let (start, hashes) = raw_string_start(b, i).unwrap();
            for &x in &b[i..start] {
                blank(&mut out, x);
            }
            i = start;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while i < b.len() && !b[i..].starts_with(&close) {
                blank(&mut out, b[i]);
                i += 1;
            }
            let n = close.len().min(b.len() - i);
            out.extend(std::iter::repeat_n(b' ', n));
            i += n;
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\u{1F600}', '{') or a lifetime ('a).
            let end = if next == Some(b'\\') {
                b.get(i + 3..)
                    .and_then(|t| t.iter().position(|&x| x == b'\''))
                    .map(|p| i + 3 + p)
            } else {
                let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
            };
            match end {
                Some(e) => {
                    for &x in &b[i..=e] {
                        blank(&mut out, x);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `r"`, `r#"`, `br##"`...: where the string's contents start, and its `#` count.
fn raw_string_start(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut j = i + if b[i] == b'b' { 2 } else { 1 };
    let mut hashes = 0;
    while b.get(j) == Some(&b'#') {
        hashes += 1;
        j += 1;
    }
    (b.get(j) == Some(&b'"')).then_some((j + 1, hashes))
}

/// `code` with every item marked `#[cfg(test)]` blanked out (to its closing brace, or
/// to its `;`).
fn without_tests(code: &str) -> String {
    let mut b = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(p) = code[from..].find("#[cfg(test)]") {
        let at = from + p;
        let mut i = at + "#[cfg(test)]".len();
        // The item runs to the `;` or to the brace that closes its first `{`.
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        for x in &mut b[at..i.min(code.len())] {
            if *x != b'\n' {
                *x = b' ';
            }
        }
        from = i.min(code.len());
    }
    String::from_utf8(b).expect("only ASCII bytes were replaced")
}

/// The top-level modules `code` (of a file in module `file_mod`, at `depth` below the
/// crate root) uses, each with its line: `crate::x`, `crate::{x, y::z}`, and
/// `super::super::x` when the supers reach the root.
fn uses(code: &str, depth: usize) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && {
            let p = code.as_bytes()[at - 1];
            p.is_ascii_alphanumeric() || p == b'_' || p == b'$'
        } {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d}`: the first segment of each top-level member.
            let mut level = 0;
            let mut member_start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => level += 1,
                    '}' if level == 0 => break,
                    '}' => level -= 1,
                    ',' if level == 0 => member_start = true,
                    c if member_start && (c.is_ascii_alphanumeric() || c == '_') => {
                        found.push((ident(&group[k..]), line_of(at)));
                        member_start = false;
                    }
                    c if !c.is_whitespace() => member_start = false,
                    _ => {}
                }
            }
        } else {
            found.push((ident(rest), line_of(at)));
        }
    }
    if depth >= 1 {
        let climb = "super::".repeat(depth);
        for (at, _) in code.match_indices(&climb) {
            if at >= "super::".len() && code[..at].ends_with("super::") {
                continue;
            }
            let rest = &code[at + climb.len()..];
            if !rest.starts_with("super::") {
                found.push((ident(rest), line_of(at)));
            }
        }
    }
    found.retain(|(m, _)| !m.is_empty() && m != "self" && m != "super");
    found
}

/// Every use of one top-level module by another in the crate at `src`.
fn edges(src: &Path) -> Vec<Edge> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src").to_path_buf();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let top = parts[0].trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        // src/a.rs and src/a/mod.rs are module `a` (depth 1); src/a/b.rs is `a::b`.
        let last = parts.last().expect("a file name");
        let depth = parts.len() - usize::from(last == "mod.rs" && parts.len() > 1);
        let text = std::fs::read_to_string(&f).expect("read a source file");
        let code = without_tests(&strip(&text));
        for (to, line) in uses(&code, depth) {
            if to != top {
                out.push(Edge {
                    from: top.clone(),
                    to,
                    file: format!("src/{}", rel.display()),
                    line,
                });
            }
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// What is wrong with `edges` under `layers`: an unknown module, a use that points up
/// the order, or a cycle among peers. Each names the offending file and line.
fn check(edges: &[Edge], layers: &[&[&str]]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (*m, i)))
        .collect();
    let mut problems = Vec::new();
    for e in edges {
        match (layer_of.get(e.from.as_str()), layer_of.get(e.to.as_str())) {
            (Some(f), Some(t)) if t > f => problems.push(format!(
                "{}:{}: `{}` uses `{}`, which is above it in the declared order",
                e.file, e.line, e.from, e.to
            )),
            (None, _) => problems.push(format!(
                "{}:{}: module `{}` is not in the declared order (add it to LAYERS)",
                e.file, e.line, e.from
            )),
            (_, None) => problems.push(format!(
                "{}:{}: `{}` uses `crate::{}`, which is not a module in the declared order (an item of the crate root, or a new module)",
                e.file, e.line, e.from, e.to
            )),
            _ => {}
        }
    }
    // Cycles: a use that can get back to its own module through other uses.
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    let reaches = |from: &str, target: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(m) = stack.pop() {
            if m == target {
                return true;
            }
            if seen.insert(m) {
                stack.extend(graph.get(m).into_iter().flatten().copied());
            }
        }
        false
    };
    for e in edges {
        if reaches(&e.to, &e.from) {
            problems.push(format!(
                "{}:{}: `{}` uses `{}`, which closes a cycle (`{}` reaches `{}` again)",
                e.file, e.line, e.from, e.to, e.to, e.from
            ));
        }
    }
    problems
}

#[test]
fn top_level_modules_form_the_declared_dag_outside_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = edges(&src);
    assert!(
        edges.len() > 50,
        "only {} uses found: is the scan blind?",
        edges.len()
    );
    // Every module of the crate is placed in the order.
    let declared: BTreeSet<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    for line in lib.lines() {
        if let Some(m) = line.trim().strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(
                declared.contains(m),
                "lib.rs declares `{m}`, which is not in LAYERS"
            );
        }
    }
    let problems = check(&edges, LAYERS);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_checker_finds_an_upward_use_and_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("low")).unwrap();
    std::fs::write(
        src.join("low/mod.rs"),
        "//! crate::high in a comment does not count\nuse crate::peer;\nconst S: &str = \"crate::high\";\nfn f() { let c = '{'; }\n#[cfg(test)]\nmod tests {\n    use crate::high;\n}\n",
    )
    .unwrap();
    std::fs::write(
        src.join("low/deep.rs"),
        "fn g() {\n    super::super::high::run();\n}\n",
    )
    .unwrap();
    std::fs::write(src.join("peer.rs"), "use crate::{json, low::Thing};\n").unwrap();
    std::fs::write(src.join("json.rs"), "").unwrap();
    std::fs::write(src.join("high.rs"), "use crate::low;\n").unwrap();
    let layers: &[&[&str]] = &[&["json"], &["low", "peer"], &["high"]];
    let e = edges(src);
    let pairs: BTreeSet<(String, String)> =
        e.iter().map(|e| (e.from.clone(), e.to.clone())).collect();
    let expected: BTreeSet<(String, String)> = [
        ("low", "peer"),
        ("low", "high"),
        ("peer", "json"),
        ("peer", "low"),
        ("high", "low"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(pairs, expected, "{e:#?}");
    let problems = check(&e, layers);
    let text = problems.join("\n");
    assert!(
        text.contains("src/low/deep.rs:2: `low` uses `high`, which is above it"),
        "{text}"
    );
    assert!(
        text.contains("src/low/mod.rs:2: `low` uses `peer`, which closes a cycle"),
        "{text}"
    );
    assert!(
        text.contains("src/peer.rs:1: `peer` uses `low`, which closes a cycle"),
        "{text}"
    );
    // With the upward use and the cycle gone, nothing is reported.
    std::fs::write(src.join("low/deep.rs"), "fn g() {}\n").unwrap();
    std::fs::write(src.join("peer.rs"), "use crate::json;\n").unwrap();
    assert_eq!(check(&edges(src), layers), Vec::<String>::new());
}
