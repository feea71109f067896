//! Templates from `templates/`, embedded in the binary and auto-escaped (HTML by file extension).

use minijinja::{AutoEscape, Environment};
use serde::Serialize;

/// The shared template environment.
pub struct Templates {
    env: Environment<'static>,
}

/// Each template, compiled in at build time so the binary runs from any directory.
const SOURCES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("form.html", include_str!("../templates/form.html")),
    ("submitted.html", include_str!("../templates/submitted.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("ack.txt", include_str!("../templates/ack.txt")),
    ("ack.html", include_str!("../templates/ack.html")),
    ("followup.txt", include_str!("../templates/followup.txt")),
    ("followup.html", include_str!("../templates/followup.html")),
];

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        // Escape by extension: `.html` for HTML, and any `.txt` or `.md` template raw by design.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        // A missing value prints as nothing: an empty form field must not say "none".
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        for (name, source) in SOURCES {
            // The templates are part of the binary and checked by the rendering tests.
            env.add_template(name, source).expect("embedded template compiles");
        }
        Templates { env }
    }

    pub fn render<S: Serialize>(&self, name: &str, ctx: S) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}
