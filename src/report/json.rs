//! JSON lines on stdout: one object per event, `{"v":1,"at":..,"event":..,...}`. The shape
//! is versioned by `v`; fields are only ever added within a version.

use std::io::Write;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::{Event, Reporter};
use crate::run::plan::Plan;
use crate::secret::Redactor;

pub(crate) const VERSION: u32 = 1;

pub(crate) struct Json {
    redactor: Redactor,
    out: Mutex<()>,
}

impl Json {
    pub(crate) fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            out: Mutex::new(()),
        }
    }

    fn line(&self, mut value: Value) {
        if let Value::Object(map) = &mut value {
            map.insert("v".into(), json!(VERSION));
            map.insert("at".into(), json!(chrono::Utc::now().to_rfc3339()));
        }
        let text = self.redactor.redact(&value.to_string());
        let _guard = self.out.lock();
        let _ = writeln!(std::io::stdout(), "{text}");
    }
}

impl Reporter for Json {
    fn event(&self, event: &Event) {
        self.line(serde_json::to_value(event).expect("events serialize"));
    }

    fn plan(&self, plan: &Plan) {
        self.line(json!({ "event": "plan", "plan": plan }));
    }

    fn result(&self, value: &Value, _text: &str) {
        self.line(json!({ "event": "result", "result": value }));
    }
}
