//! Chat templates: the model's own Jinja template rendered with minijinja (Python-compatible
//! string and dict methods, `raise_exception`, `tojson`), or ChatML when a model ships none.

use cortex_proto::generate::ChatMessage;
use minijinja::{context, Environment, Error, ErrorKind, Value};

use super::toolcall::prompt::template_call;
use super::toolcall::Format;
use super::EngineError;

/// Used when the model carries no template: ChatML is what most small instruct models expect.
const FALLBACK_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// True when the model shipped no template and ChatML is used instead.
    pub fallback: bool,
    /// How this model writes tool calls: its template's format, or cortex's generic one.
    pub tool_format: Format,
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(format: String) -> String {
    // Templates use it for "today's date" in system prompts; a fixed-format UTC date is enough.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant), so no date crate is pulled in for one call.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format.replace("%Y", &y.to_string()).replace("%m", &format!("{m:02}")).replace("%d", &format!("{d:02}"))
}

impl ChatTemplate {
    pub fn new(template: Option<String>, bos: String, eos: String) -> Result<Self, EngineError> {
        let fallback = template.is_none();
        let tool_format = Format::detect(template.as_deref());
        let source = template.unwrap_or_else(|| FALLBACK_TEMPLATE.to_string());
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        // HF templates rely on Jinja's whitespace handling with these two flags.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source)
            .map_err(|e| EngineError::Template(format!("model chat template does not parse: {e}")))?;
        Ok(Self { env, bos, eos, fallback, tool_format })
    }

    /// The prompt text for `messages`, ending where the assistant's answer starts. `tools` (the
    /// template's own shape, see `toolcall::prompt`) go to templates that render them.
    pub fn render(&self, messages: &[ChatMessage], tools: &[serde_json::Value]) -> Result<String, EngineError> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                // Keys only where they mean something: templates test `is defined` as often as truth.
                let mut obj = serde_json::json!({"role": m.role.as_str(), "content": m.content});
                if !m.tool_calls.is_empty() {
                    obj["tool_calls"] = m.tool_calls.iter().map(template_call).collect();
                }
                if let Some(id) = &m.tool_call_id {
                    obj["tool_call_id"] = id.as_str().into();
                }
                if let Some(name) = &m.name {
                    obj["name"] = name.as_str().into();
                }
                Value::from_serialize(obj)
            })
            .collect();
        let tools = (!tools.is_empty()).then(|| Value::from_serialize(tools));
        let tmpl = self.env.get_template("chat").map_err(|e| EngineError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => msgs,
            tools => tools,
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| {
            // raise_exception is the template telling the caller its input is unacceptable.
            EngineError::BadPrompt(format!("the model's chat template rejected the messages: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_proto::generate::Role;

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage::text(role, content)
    }

    #[test]
    fn fallback_is_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(None, String::new(), String::new()).unwrap();
        let out = t.render(&[msg(Role::System, "S"), msg(Role::User, "Hi")], &[]).unwrap();
        assert_eq!(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ bos_token }}{{ messages[0].content.strip().upper() }}|{{ messages | tojson }}";
        let t = ChatTemplate::new(Some(src.into()), "<s>".into(), "</s>".into()).unwrap();
        let out = t.render(&[msg(Role::User, "  hi ")], &[]).unwrap();
        assert!(out.starts_with("<s>HI|"), "{out}");
        assert!(out.contains("\"role\":\"user\"") || out.contains("\"role\": \"user\""), "{out}");
        let err = t.render(&[msg(Role::Assistant, "x")], &[]).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }
}
