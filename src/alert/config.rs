//! Rule files: rules, the notifier's channels and routing, and limits, in
//! YAML, TOML or JSON.

use serde::{Deserialize, Serialize};

use super::eval::EvalConfig;
use super::notify::NotifierConfig;
use super::rule::Rule;
use crate::time::Span;

/// The largest rule or rule-test file the loaders read.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// A rule file: the rules, and optionally the notifier's configuration
/// and the evaluator's limits.
///
/// ```
/// # #[cfg(feature = "yaml")] {
/// use edgestream::alert::RuleFile;
///
/// let file = RuleFile::from_yaml_str(r#"
/// rules:
///   - name: high_latency
///     rule: avg(latency_ms) by (region) > 250 for 2m recover < 200 severity=critical
///     annotations:
///       summary: "{{labels.region}} latency is {{value}} ms"
///   - name: host_down
///     absent: true
///     by: [host]
///     for: 5m
///     channels: [pager]
/// notifier:
///   channels:
///     ops: {kind: webhook, url: "https://example.com/alerts"}
///     pager: {kind: slack, url: "https://hooks.slack.com/services/T0/B0/x"}
///   default_channels: [ops]
/// "#)?;
/// assert_eq!(file.rules[1].to_string(), "absent() by (host) for 5m notify=pager");
/// assert!(RuleFile::from_yaml_str("rules:\n  - name: x\n    rule: avg(x) > 1 notify=nowhere\nnotifier:\n  channels: {ops: {kind: webhook, url: u}}\n").is_err());
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RuleFile {
    /// The rules.
    pub rules: Vec<Rule>,
    /// Channels, default channels and grouping.
    #[serde(default)]
    pub notifier: NotifierConfig,
    /// The evaluator's limits.
    #[serde(default)]
    pub limits: EvalConfig,
}

/// Why a rule file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid for its format, or a rule in it is invalid;
    /// the message gives the place (line and column where the format
    /// reports them).
    #[error("{format}: {message}")]
    Syntax {
        /// `yaml`, `toml` or `json`.
        format: &'static str,
        /// What is wrong, and where.
        message: String,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("the file is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// Two rules share a name.
    #[error("two rules are named {0:?}")]
    DuplicateRule(String),
    /// A rule or the defaults name a channel the notifier does not configure.
    #[error("rule {rule:?} names channel {channel:?}, which is not configured")]
    UnknownChannel {
        /// The rule (empty for `default_channels`).
        rule: String,
        /// The channel.
        channel: String,
    },
}

impl RuleFile {
    /// Parses a JSON rule file.
    pub fn from_json_str(text: &str) -> Result<RuleFile, ConfigError> {
        Self::check_size(text)?;
        let file: RuleFile =
            serde_json::from_str(text).map_err(|e| ConfigError::Syntax { format: "json", message: e.to_string() })?;
        file.validate()
    }

    /// Parses a YAML rule file.
    #[cfg(feature = "yaml")]
    pub fn from_yaml_str(text: &str) -> Result<RuleFile, ConfigError> {
        Self::check_size(text)?;
        let file: RuleFile = serde_yaml_ng::from_str(text)
            .map_err(|e| ConfigError::Syntax { format: "yaml", message: e.to_string() })?;
        file.validate()
    }

    /// Parses a TOML rule file (`[[rules]]` tables).
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<RuleFile, ConfigError> {
        Self::check_size(text)?;
        let file: RuleFile =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { format: "toml", message: e.to_string() })?;
        file.validate()
    }

    fn check_size(text: &str) -> Result<(), ConfigError> {
        if text.len() > MAX_CONFIG_BYTES { Err(ConfigError::TooLarge) } else { Ok(()) }
    }

    /// Checks what serde cannot: unique rule names, and channels that
    /// exist when the file configures any.
    pub fn validate(self) -> Result<RuleFile, ConfigError> {
        let mut names = std::collections::HashSet::new();
        for rule in &self.rules {
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::DuplicateRule(rule.name.clone()));
            }
        }
        let route = &self.notifier.route;
        if !(route.group_interval.is_positive() && route.repeat_interval.is_positive()) || route.group_wait < Span::ZERO
        {
            return Err(ConfigError::Invalid("route: `group_interval` and `repeat_interval` must be positive".into()));
        }
        if route.group_by.iter().any(|l| l == "severity") {
            return Err(ConfigError::Invalid(
                "route: `severity` cannot be a grouping label (escalation changes it)".into(),
            ));
        }
        let channels = &self.notifier.channels;
        if !channels.is_empty() {
            let named = self.rules.iter().flat_map(|r| {
                r.channels
                    .iter()
                    .chain(r.escalate.iter().flat_map(|s| s.notify.iter()))
                    .map(move |c| (r.name.as_str(), c))
            });
            let defaults = self.notifier.default_channels.iter().map(|c| ("", c));
            if let Some((rule, channel)) = named.chain(defaults).find(|(_, c)| !channels.contains_key(*c)) {
                return Err(ConfigError::UnknownChannel { rule: rule.to_owned(), channel: channel.clone() });
            }
        }
        Ok(self)
    }
}
