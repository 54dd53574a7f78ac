//! Hive-style partition paths.

use std::fmt::Write;

use crate::time::Timestamp;

/// The default path template: Hive partitions by tenant, stream, date and
/// hour (of event time, UTC), and a file name from the writer's id and a
/// sequence number.
pub const DEFAULT_TEMPLATE: &str = "tenant={tenant}/stream={stream}/date={date}/hour={hour}/part-{writer}-{seq}.{ext}";

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 7] = ["tenant", "stream", "date", "hour", "writer", "seq", "ext"];

/// Checks a path template: known placeholders, balanced braces, and
/// `{seq}` present (without it two files of a partition would share a name).
pub(crate) fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    let mut has_seq = false;
    while let Some(open) = rest.find('{') {
        let after = rest.get(open + 1..).unwrap_or_default();
        let close = after.find('}').ok_or("a `{` without its `}`")?;
        let name = after.get(..close).unwrap_or_default();
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{name}}}` (known: tenant, stream, date, hour, writer, seq, ext)"
            ));
        }
        has_seq |= name == "seq";
        rest = after.get(close + 1..).unwrap_or_default();
    }
    if rest.contains('}') || template.split('{').next().is_some_and(|head| head.contains('}')) {
        return Err("a `}` without its `{`".into());
    }
    if !has_seq {
        return Err("the template needs `{seq}`, or files of one partition would overwrite each other".into());
    }
    if template.starts_with('/') || template.split('/').any(|part| part == ".." || part.is_empty()) {
        return Err("the template must be a relative path without empty or `..` parts".into());
    }
    Ok(())
}

/// The values a path is rendered from.
pub(crate) struct PathParts<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) stream: &'a str,
    /// The start of the partition's hour.
    pub(crate) hour: Timestamp,
    pub(crate) writer: &'a str,
    pub(crate) seq: u64,
    pub(crate) ext: &'a str,
}

/// Renders a checked template. Tenant, stream and writer are escaped as
/// Hive escapes partition values (`%XX` for `/`, `=`, `%`, control and
/// other unsafe characters), so no value can add a directory level.
pub(crate) fn render(template: &str, parts: &PathParts<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 48);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(rest.get(..open).unwrap_or_default());
        let after = rest.get(open + 1..).unwrap_or_default();
        let close = after.find('}').unwrap_or(after.len());
        match after.get(..close).unwrap_or_default() {
            "tenant" => escape(&mut out, parts.tenant),
            "stream" => escape(&mut out, parts.stream),
            "writer" => escape(&mut out, parts.writer),
            "date" => {
                let text = parts.hour.to_rfc3339();
                out.push_str(text.get(..10).unwrap_or("1970-01-01"));
            }
            "hour" => {
                let text = parts.hour.to_rfc3339();
                out.push_str(text.get(11..13).unwrap_or("00"));
            }
            "seq" => {
                let _ = write!(out, "{:06}", parts.seq);
            }
            "ext" => out.push_str(parts.ext),
            _ => {}
        }
        rest = after.get(close + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// `value` as it appears in a partition path (`tenant=<value>`), escaped
/// the way Hive escapes partition values: to find a tenant's or a stream's
/// files.
///
/// ```
/// assert_eq!(edgestream::sink::partition_value("eu/west 1"), "eu%2Fwest 1");
/// assert_eq!(edgestream::sink::partition_value(""), "__HIVE_DEFAULT_PARTITION__");
/// ```
pub fn partition_value(value: &str) -> String {
    let mut out = String::new();
    escape(&mut out, value);
    out
}

/// Hive's partition-value escaping.
fn escape(out: &mut String, value: &str) {
    if value.is_empty() {
        // Hive's name for a missing partition value.
        out.push_str("__HIVE_DEFAULT_PARTITION__");
        return;
    }
    for c in value.chars() {
        let unsafe_char = c.is_control()
            || matches!(
                c,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^' | '\u{7f}'
            )
            || (value == "." || value == "..");
        if unsafe_char {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_escapes() {
        let hour = Timestamp::from_secs(1_795_838_400).unwrap(); // 2026-11-28T04:00:00Z
        let parts = PathParts { tenant: "acme/eu", stream: "a=b", hour, writer: "w1", seq: 7, ext: "parquet" };
        assert_eq!(
            render(DEFAULT_TEMPLATE, &parts),
            "tenant=acme%2Feu/stream=a%3Db/date=2026-11-28/hour=04/part-w1-000007.parquet"
        );
        let empty = PathParts { tenant: "", stream: "..", ..parts };
        assert!(render(DEFAULT_TEMPLATE, &empty).starts_with("tenant=__HIVE_DEFAULT_PARTITION__/stream=%2E%2E/"));
    }

    #[test]
    fn checks_templates() {
        assert!(check(DEFAULT_TEMPLATE).is_ok());
        assert!(check("{tenant}/{seq}.{ext}").is_ok());
        for bad in ["{tenant}/x.parquet", "{nope}/{seq}", "{seq", "seq}/{seq}", "/abs/{seq}", "a/../{seq}", "a//{seq}"]
        {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
