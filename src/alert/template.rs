//! `{{…}}` templates in annotations.

use std::fmt::Write;

/// What a template can refer to.
pub(crate) struct Context<'a> {
    pub(crate) rule: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) severity: &'a str,
    pub(crate) value: Option<f64>,
    pub(crate) labels: &'a [(String, String)],
    pub(crate) cells: &'a [String],
}

enum Part<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits a template into text and variables; an error names a malformed
/// or unknown placeholder.
fn parts(template: &str) -> impl Iterator<Item = Result<Part<'_>, String>> {
    let mut rest = template;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find("{{") {
            Some(0) => {
                let Some(end) = rest.find("}}") else {
                    rest = "";
                    return Some(Err("`{{` without a closing `}}`".to_owned()));
                };
                let var = rest.get(2..end).unwrap_or_default().trim();
                rest = rest.get(end + 2..).unwrap_or_default();
                let known = matches!(var, "value" | "rule" | "tenant" | "severity" | "cells")
                    || var.strip_prefix("labels.").is_some_and(|l| !l.is_empty());
                Some(if known { Ok(Part::Var(var)) } else { Err(format!("unknown placeholder `{{{{{var}}}}}`")) })
            }
            Some(start) => {
                let (text, tail) = rest.split_at(start);
                rest = tail;
                Some(Ok(Part::Text(text)))
            }
            None => {
                let text = rest;
                rest = "";
                Some(Ok(Part::Text(text)))
            }
        }
    })
}

/// Checks that every placeholder is known: `{{value}}`, `{{rule}}`,
/// `{{tenant}}`, `{{severity}}`, `{{cells}}` or `{{labels.<name>}}`.
pub(crate) fn check(template: &str) -> Result<(), String> {
    parts(template).try_for_each(|p| p.map(|_| ()))
}

/// Renders a template; a label the alert does not have renders empty.
pub(crate) fn render(template: &str, ctx: &Context<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    for part in parts(template) {
        match part {
            Ok(Part::Text(text)) => out.push_str(text),
            Ok(Part::Var("value")) => {
                if let Some(v) = ctx.value {
                    let _ = write!(out, "{}", Rounded(v));
                }
            }
            Ok(Part::Var("rule")) => out.push_str(ctx.rule),
            Ok(Part::Var("tenant")) => out.push_str(ctx.tenant),
            Ok(Part::Var("severity")) => out.push_str(ctx.severity),
            Ok(Part::Var("cells")) => out.push_str(&ctx.cells.join(",")),
            Ok(Part::Var(var)) => {
                let name = var.strip_prefix("labels.").unwrap_or_default();
                if let Some((_, v)) = ctx.labels.iter().find(|(k, _)| k == name) {
                    out.push_str(v);
                }
            }
            // Rules are checked when built, so this does not happen; a bad
            // placeholder would render empty.
            Err(_) => {}
        }
    }
    out
}

/// A value for people: at most 4 decimals, no trailing zeros.
struct Rounded(f64);

impl std::fmt::Display for Rounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if !v.is_finite() || v.abs() >= 1e15 {
            return write!(f, "{v}");
        }
        let text = format!("{v:.4}");
        let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
        f.write_str(if text == "-0" { "0" } else { text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let labels = vec![("region".to_owned(), "eu".to_owned())];
        let ctx = Context {
            rule: "r",
            tenant: "t",
            severity: "critical",
            value: Some(251.123456),
            labels: &labels,
            cells: &[],
        };
        assert_eq!(render("{{ labels.region }}: {{value}} ({{rule}}, {{labels.nope}})", &ctx), "eu: 251.1235 (r, )");
        assert!(check("{{labels.x}} {{value}}").is_ok());
        assert!(check("{{valu}}").is_err());
        assert!(check("{{value").is_err());
        assert_eq!(Rounded(2.0).to_string(), "2");
        assert_eq!(Rounded(-0.00001).to_string(), "0");
    }
}
