//! The service's console (stderr): one JSON object per line, each with its
//! time and an `event` name, so that a log collector, `journalctl -o cat |
//! jq` or an engineer reads every line the same way. The ready line alone
//! goes to stdout (a supervisor waits for it).

use serde_json::{Map, Value};

use crate::device::now_unix_ms;

/// Say `event` with `fields` (a JSON object; anything else is kept under
/// `detail`).
pub(crate) fn say(event: &str, fields: Value) {
    let mut line = Map::new();
    line.insert("time_unix_ms".into(), Value::from(now_unix_ms()));
    line.insert("event".into(), Value::from(event));
    match fields {
        Value::Object(f) => line.extend(f),
        Value::Null => {}
        other => {
            line.insert("detail".into(), other);
        }
    }
    eprintln!("{}", Value::Object(line));
}
