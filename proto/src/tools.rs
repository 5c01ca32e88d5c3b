//! What a request may ask of a model's output beyond free text, in neutral terms: tools it may
//! call (a JSON schema for a function's arguments, or a free-form input with an optional
//! grammar), whether and which to call, and a format for a plain answer (JSON, a JSON schema, a
//! Lark or regex grammar). Both HTTP dialects translate into these; the engine turns them into
//! one grammar per sequence and the model's own tool-call format.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A grammar in one of the notations llguidance compiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "syntax", content = "source", rename_all = "snake_case")]
pub enum Grammar {
    Lark(String),
    Regex(String),
}

impl Grammar {
    /// The language as one anchored regex, for a free-form tool's input (which travels inside a
    /// JSON string; see [`crate::lark`]).
    pub fn input_regex(&self) -> Result<String, String> {
        let rx = match self {
            Grammar::Lark(src) => crate::lark::to_regex(src)?,
            Grammar::Regex(rx) => rx.clone(),
        };
        Ok(format!("^(?:{rx})$"))
    }
}

/// What a tool takes as input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolInput {
    /// A function: its arguments are a JSON object of this schema.
    Json {
        schema: Value,
        /// The client asked for strict schema adherence (cortex always constrains calls).
        #[serde(default)]
        strict: bool,
    },
    /// A free-form tool (OpenAI's `custom`): plain text, shaped by a grammar when it has one.
    Text {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grammar: Option<Grammar>,
    },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub input: ToolInput,
}

/// Whether the model must, may or must not call a tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "name", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides between answering and calling.
    #[default]
    Auto,
    /// No call: the tools are context only.
    None,
    /// At least one call, to any tool.
    Required,
    /// Exactly this tool.
    Named(String),
}

/// A call the model made: in the history a client replays, or in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON text for functions, raw text for free-form
    /// tools.
    pub arguments: String,
}

/// The shape of a plain answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// A JSON value of this schema.
    JsonSchema {
        #[serde(default)]
        name: String,
        schema: Value,
        #[serde(default)]
        strict: bool,
    },
    /// Text that this grammar accepts.
    Grammar { grammar: Grammar },
}

impl ResponseFormat {
    pub fn is_text(&self) -> bool {
        matches!(self, ResponseFormat::Text)
    }
}

/// Longest tool name accepted (OpenAI's limit).
pub const MAX_TOOL_NAME: usize = 64;

/// Whether `name` is a valid tool name: 1 to 64 of `a-z A-Z 0-9 _ -` (both dialects' rule).
pub fn valid_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a request's tools and tool choice together: names valid and unique, a named choice
/// among them, a required call with something to call. `Err` is the message for a 400.
pub fn check_tools(tools: &[Tool], choice: &ToolChoice) -> Result<(), String> {
    for (i, t) in tools.iter().enumerate() {
        if !valid_tool_name(&t.name) {
            return Err(format!(
                "tools[{i}].name `{}` is not a valid tool name (1 to {MAX_TOOL_NAME} letters, digits, `_` or `-`)",
                t.name
            ));
        }
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("tools[{i}].name `{}` is given twice", t.name));
        }
        if let ToolInput::Json { schema, .. } = &t.input {
            if !schema.is_object() && schema != &Value::Bool(true) {
                return Err(format!("tools[{i}] (`{}`): the parameters must be a JSON Schema object", t.name));
            }
        }
        if let ToolInput::Text { grammar: Some(g) } = &t.input {
            g.input_regex()
                .map_err(|e| format!("tools[{i}] (`{}`): its Lark grammar cannot be enforced: {e}", t.name))?;
        }
    }
    match choice {
        ToolChoice::Named(name) if !tools.iter().any(|t| &t.name == name) => {
            Err(format!("tool_choice names `{name}`, which is not among the request's tools"))
        }
        ToolChoice::Required if tools.is_empty() => {
            Err("tool_choice requires a tool call but no tools are given".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: String::new(),
            input: ToolInput::Json { schema: serde_json::json!({"type": "object"}), strict: false },
        }
    }

    #[test]
    fn tool_names_choices_and_schemas_are_checked() {
        assert!(check_tools(&[f("get_weather"), f("search-web")], &ToolChoice::Named("get_weather".into())).is_ok());
        assert!(check_tools(&[], &ToolChoice::Auto).is_ok());
        let e = check_tools(&[f("a"), f("a")], &ToolChoice::Auto).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = check_tools(&[f("has space")], &ToolChoice::Auto).unwrap_err();
        assert!(e.contains("not a valid tool name"), "{e}");
        assert!(check_tools(&[f(&"x".repeat(65))], &ToolChoice::Auto).is_err());
        let e = check_tools(&[f("a")], &ToolChoice::Named("b".into())).unwrap_err();
        assert!(e.contains("`b`") && e.contains("not among"), "{e}");
        assert!(check_tools(&[], &ToolChoice::Required).is_err());
        let bad = Tool { input: ToolInput::Json { schema: serde_json::json!("object"), strict: false }, ..f("a") };
        assert!(check_tools(&[bad], &ToolChoice::Auto).unwrap_err().contains("JSON Schema object"));
    }

    #[test]
    fn the_wire_forms_are_tagged() {
        let c = serde_json::to_value(ToolChoice::Named("x".into())).unwrap();
        assert_eq!(c, serde_json::json!({"mode": "named", "name": "x"}));
        assert_eq!(
            serde_json::from_value::<ToolChoice>(serde_json::json!({"mode": "auto"})).unwrap(),
            ToolChoice::Auto
        );
        let g = ResponseFormat::Grammar { grammar: Grammar::Regex("[0-9]+".into()) };
        let back: ResponseFormat = serde_json::from_value(serde_json::to_value(&g).unwrap()).unwrap();
        assert_eq!(back, g);
    }
}
