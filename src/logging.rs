//! The logger: env_logger, writing its own lines (`LOG_FORMAT=text`) or one JSON object per
//! line (`LOG_FORMAT=json`) for log collectors.

use std::io::Write;

use crate::settings::LogFormat;

/// The filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,actix_server=warn";

/// Starts logging in `format`, filtered by `RUST_LOG`.
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER));
    if format == LogFormat::Json {
        builder.format(|buf, record| writeln!(buf, "{}", json_line(record)));
    }
    builder.init();
}

/// One record as a JSON object: time (UTC), level, target and message. An audit record's
/// message is already JSON: it goes in whole, under `audit`, rather than as a string.
/// serde_json escapes control characters, so no message can break a line in two.
pub fn json_line(record: &log::Record<'_>) -> serde_json::Value {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let message = record.args().to_string();
    let mut line = serde_json::json!({
        "time": time,
        "level": record.level().as_str(),
        "target": record.target(),
    });
    let audit = (record.target() == latchkey_auth::audit::TARGET)
        .then(|| serde_json::from_str::<serde_json::Value>(&message).ok())
        .flatten()
        .filter(serde_json::Value::is_object);
    match audit {
        Some(event) => line["audit"] = event,
        None => line["message"] = message.into(),
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_and_audit_events_stay_structured() -> Result<(), serde_json::Error> {
        let args = format_args!("two\nlines");
        let record = log::Record::builder().args(args).level(log::Level::Warn).target("latchkey").build();
        let line = json_line(&record).to_string();
        assert!(!line.contains('\n'), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(parsed["level"], "WARN");
        assert_eq!(parsed["message"], "two\nlines");

        let args = format_args!(r#"{{"event":"authn_login_fail","user_id":7}}"#);
        let record = log::Record::builder().args(args).level(log::Level::Info).target("audit").build();
        let parsed = json_line(&record);
        assert_eq!(parsed["audit"]["event"], "authn_login_fail");
        assert_eq!(parsed["audit"]["user_id"], 7);
        assert!(parsed.get("message").is_none());
        Ok(())
    }
}
