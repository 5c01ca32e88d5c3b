//! Chat templates: the model's own Jinja template rendered with minijinja (Python-compatible
//! string and dict methods, `raise_exception`, `tojson`), or, for a file that ships none, the
//! turn format of its architecture's family (never a blind ChatML: a model answers in the
//! markers it was trained on, and writes other families' markers back as text).

use cortex_proto::generate::ChatMessage;
use minijinja::{context, Environment, Error, ErrorKind, Value};

use super::toolcall::prompt::template_call;
use super::toolcall::Format;
use super::EngineError;

/// A family's turn format, for files without a template of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `<|im_start|>role … <|im_end|>`: Qwen, SmolLM and most small instruct models.
    ChatMl,
    /// `<start_of_turn>user … <end_of_turn>`, the system prompt leading the first user turn.
    Gemma,
    /// `<|start_header_id|>role<|end_header_id|> … <|eot_id|>`.
    Llama3,
    /// `[INST] … [/INST]`, the system prompt leading the first user turn.
    Mistral,
}

impl Family {
    /// The family of an architecture, told apart by the markers its vocabulary has where one
    /// architecture name covers several (`llama` is Llama 2 and 3, SmolLM, Mistral's first).
    pub fn of(arch: &str, has_token: impl Fn(&str) -> bool) -> Self {
        match arch {
            a if a.starts_with("gemma") => Family::Gemma,
            _ if has_token("<|im_start|>") => Family::ChatMl,
            _ if has_token("<|start_header_id|>") => Family::Llama3,
            "mistral" => Family::Mistral,
            _ if has_token("[INST]") => Family::Mistral,
            _ => Family::ChatMl,
        }
    }

    fn template(self) -> &'static str {
        match self {
            Family::ChatMl => CHATML,
            Family::Gemma => GEMMA,
            Family::Llama3 => LLAMA3,
            Family::Mistral => MISTRAL,
        }
    }
}

const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// Gemma has no system role: the system prompt opens the first user turn. Tool results are the
// user's words to it, as every role but the assistant's.
const GEMMA: &str = "{{ bos_token }}{% set ns = namespace(prefix='') %}{% for message in messages %}{% if message.role == 'system' %}{% set ns.prefix = ns.prefix + message.content + '\n\n' %}{% else %}<start_of_turn>{{ 'model' if message.role == 'assistant' else 'user' }}\n{% if message.role != 'assistant' %}{{ ns.prefix }}{% set ns.prefix = '' %}{% endif %}{{ message.content | trim }}<end_of_turn>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

const MISTRAL: &str = "{{ bos_token }}{% set ns = namespace(prefix='') %}{% for message in messages %}{% if message.role == 'system' %}{% set ns.prefix = ns.prefix + message.content + '\n\n' %}{% elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}{% else %}[INST] {{ ns.prefix }}{% set ns.prefix = '' %}{{ message.content }}[/INST]{% endif %}{% endfor %}";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// True when the model shipped no template and its family's is used instead.
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
    /// The model's own template, else `family`'s.
    pub fn new(template: Option<String>, family: Family, bos: String, eos: String) -> Result<Self, EngineError> {
        let fallback = template.is_none();
        let tool_format = Format::detect(template.as_deref());
        let source = template.unwrap_or_else(|| family.template().to_string());
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
    /// template's own shape, see `toolcall::prompt`) go to templates that render them. With
    /// `continue_final`, the last message is an answer the client began (a prefill): the prompt
    /// ends with its text, left open, so generation continues it.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        continue_final: bool,
    ) -> Result<String, EngineError> {
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
        let text = tmpl
            .render(context! {
                messages => msgs,
                tools => tools,
                add_generation_prompt => !continue_final,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            .map_err(|e| {
                // raise_exception is the template telling the caller its input is unacceptable.
                EngineError::BadPrompt(format!("the model's chat template rejected the messages: {e}"))
            })?;
        match messages.last() {
            // Templates close every turn; what follows the prefill's own text is that closing
            // (end-of-turn marker, newline), so the prompt is cut where the text ends. Templates
            // trim content, so the text is looked for without surrounding whitespace.
            Some(last) if continue_final => {
                let prefill = last.content.trim();
                match text.rfind(prefill) {
                    Some(at) if !prefill.is_empty() => Ok(text[..at + prefill.len()].to_string()),
                    _ => Err(EngineError::BadPrompt(
                        "the model's chat template does not render the assistant's prefill as given; send it as a new turn".into(),
                    )),
                }
            }
            _ => Ok(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_proto::generate::Role;

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage::text(role, content)
    }

    fn builtin(family: Family) -> ChatTemplate {
        ChatTemplate::new(None, family, "<bos>".into(), "</s>".into()).unwrap()
    }

    #[test]
    fn chatml_family_renders_with_generation_prompt() {
        let out = builtin(Family::ChatMl).render(&[msg(Role::System, "S"), msg(Role::User, "Hi")], &[], false).unwrap();
        assert_eq!(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn gemma_family_renders_gemma_3_turns() {
        // Gemma 3's documented format: no system role (its text opens the first user turn),
        // the assistant is `model`, each turn closed by <end_of_turn> and a newline.
        let t = builtin(Family::Gemma);
        let out = t.render(&[msg(Role::User, "Hello")], &[], false).unwrap();
        assert_eq!(out, "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n");
        let history = [
            msg(Role::System, "Be brief."),
            msg(Role::User, "Hi"),
            msg(Role::Assistant, "Hello!"),
            msg(Role::User, "Capital of France?"),
        ];
        assert_eq!(
            t.render(&history, &[], false).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn llama3_and_mistral_families_render_their_turns() {
        let history = [msg(Role::System, "S"), msg(Role::User, "Hi"), msg(Role::Assistant, "Yo"), msg(Role::User, "Q")];
        assert_eq!(
            builtin(Family::Llama3).render(&history[..2], &[], false).unwrap(),
            "<bos><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            builtin(Family::Mistral).render(&history, &[], false).unwrap(),
            "<bos>[INST] S\n\nHi[/INST]Yo</s>[INST] Q[/INST]"
        );
    }

    #[test]
    fn a_file_s_family_comes_from_its_architecture_and_markers() {
        let none = |_: &str| false;
        assert_eq!(Family::of("gemma3", |t| t == "<|im_start|>"), Family::Gemma);
        assert_eq!(Family::of("llama", |t| t == "<|im_start|>"), Family::ChatMl);
        assert_eq!(Family::of("llama", |t| t == "<|start_header_id|>"), Family::Llama3);
        assert_eq!(Family::of("llama", |t| t == "[INST]"), Family::Mistral);
        assert_eq!(Family::of("mistral", none), Family::Mistral);
        assert_eq!(Family::of("qwen2", none), Family::ChatMl);
    }

    #[test]
    fn a_prefill_is_continued_not_closed() {
        let history = [msg(Role::User, "Colours as JSON?"), msg(Role::Assistant, "[\"red\", ")];
        let chatml = builtin(Family::ChatMl).render(&history, &[], true).unwrap();
        assert_eq!(chatml, "<|im_start|>user\nColours as JSON?<|im_end|>\n<|im_start|>assistant\n[\"red\",");
        let gemma = builtin(Family::Gemma).render(&history, &[], true).unwrap();
        assert_eq!(gemma, "<bos><start_of_turn>user\nColours as JSON?<end_of_turn>\n<start_of_turn>model\n[\"red\",");
        // A template that drops the assistant's text cannot continue it: a clear refusal.
        let t =
            ChatTemplate::new(Some("{{ messages[0].content }}".into()), Family::ChatMl, String::new(), String::new())
                .unwrap();
        let err = t.render(&history, &[], true).unwrap_err();
        assert!(err.to_string().contains("prefill"), "{err}");
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ bos_token }}{{ messages[0].content.strip().upper() }}|{{ messages | tojson }}";
        let t = ChatTemplate::new(Some(src.into()), Family::ChatMl, "<s>".into(), "</s>".into()).unwrap();
        let out = t.render(&[msg(Role::User, "  hi ")], &[], false).unwrap();
        assert!(out.starts_with("<s>HI|"), "{out}");
        assert!(out.contains("\"role\":\"user\"") || out.contains("\"role\": \"user\""), "{out}");
        let err = t.render(&[msg(Role::Assistant, "x")], &[], false).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }
}
