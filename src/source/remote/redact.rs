//! URLs made safe to print: an Azure SAS token (`?sv=…&sig=…`), an S3 or GCS presigned
//! query (`X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`,
//! `X-Goog-Signature`), and the password of `user:password@host`.
//!
//! Every query value is replaced, not only the known ones: a query on an object URL
//! exists to authorise, and a parameter's name is enough to say what it was. The
//! fragment goes too. Inputs are redacted once, when their display form is made, so the
//! checkpoint, the rejects file, the logs and the report only ever see this form; free
//! text from the HTTP stack (which quotes the URL it failed on) goes through
//! [`redact_text`].
//!
//! Hand-written rather than through a URL parser, so that it also works on text that is
//! not quite a URL and on builds without the object-store feature.

/// What replaces a secret.
pub const REDACTED: &str = "REDACTED";

/// An error and the errors under it (`source()`), each said once, as one line made
/// safe by [`redact_text`]: the HTTP stack's top line ("error sending request") rarely
/// says why (a certificate no authority signed, a refused connection), its sources do.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let line = s.to_string();
        if !line.is_empty() && !out.contains(&line) {
            out.push_str(": ");
            out.push_str(&line);
        }
        next = s.source();
    }
    redact_text(&out)
}

/// `url` with every query value, the fragment and any password replaced by
/// [`REDACTED`]; scheme, host, path and parameter names kept. Text without `://` (a
/// local path) is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = scheme_end + 3;
    let rest = &url[after..];
    // The authority ends at the first `/`, `?` or `#`.
    let auth_end = rest.find(['/', '?', '#']).map_or(rest.len(), |i| i);
    let (authority, tail) = rest.split_at(auth_end);
    let mut out = String::with_capacity(url.len() + 16);
    out.push_str(&url[..after]);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(REDACTED);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((b, _)) => (b, true),
        None => (tail, false),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, kv) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match kv.split_once('=') {
                    Some((k, _)) => {
                        out.push_str(k);
                        out.push('=');
                        out.push_str(REDACTED);
                    }
                    // A bare token: it may be the secret itself.
                    None if kv.is_empty() => {}
                    None => out.push_str(REDACTED),
                }
            }
        }
        None => out.push_str(before_fragment),
    }
    if fragment {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

/// `text` with every URL in it (anything from a scheme's `://` to the next blank, quote,
/// bracket or comma) replaced by its [`redact_url`] form.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        // The scheme: the letters, digits, `+`, `-`, `.` just before `://`.
        let start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[sep..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | ',' | '`')
            })
            .map_or(rest.len(), |i| sep + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_tokens_presigned_queries_and_passwords_are_redacted_names_kept() {
        let sas = "https://acct.blob.core.windows.net/exports/part-0.csv?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-12-01T00:00:00Z&sig=abc%2Bdef%3D";
        assert_eq!(
            redact_url(sas),
            "https://acct.blob.core.windows.net/exports/part-0.csv?sv=REDACTED&ss=REDACTED&srt=REDACTED&sp=REDACTED&se=REDACTED&sig=REDACTED"
        );
        let pre = "https://b.s3.amazonaws.com/k.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAXXX%2F20260101&X-Amz-Signature=deadbeef";
        let r = redact_url(pre);
        assert!(!r.contains("AKIA") && !r.contains("deadbeef"), "{r}");
        assert!(r.contains("X-Amz-Signature=REDACTED"), "{r}");
        assert_eq!(redact_url("s3://bucket/prefix/"), "s3://bucket/prefix/");
        assert_eq!(redact_url("export/part-0.csv"), "export/part-0.csv");
        assert_eq!(
            redact_url("https://user:secret@host/x"),
            "https://user:REDACTED@host/x"
        );
        assert_eq!(
            redact_url("https://h/x?justatoken#frag"),
            "https://h/x?REDACTED#REDACTED"
        );
    }

    #[test]
    fn urls_inside_free_text_are_redacted() {
        let t = redact_text("error sending request for url (https://h/x?sig=zzz): timed out");
        assert_eq!(
            t,
            "error sending request for url (https://h/x?sig=REDACTED): timed out"
        );
        let t = redact_text("a s3://b/k and http://u:pw@h:9/p?a=1, done");
        assert_eq!(t, "a s3://b/k and http://u:REDACTED@h:9/p?a=REDACTED, done");
        assert_eq!(redact_text("no urls here"), "no urls here");
    }
}
