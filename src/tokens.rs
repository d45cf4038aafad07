//! Token counting with tiktoken-rs. Tokenizers are expensive to build (hundreds
//! of thousands of ranks), so [`Tokenizers`] is built once per VM at configure
//! time and shared by every request on that VM.

use tiktoken_rs::CoreBPE;

use crate::chat_request::ChatRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingName {
    O200kBase,
    Cl100kBase,
}

impl EncodingName {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "o200k_base" => Some(EncodingName::O200kBase),
            "cl100k_base" => Some(EncodingName::Cl100kBase),
            _ => None,
        }
    }
}

/// Model-name prefix → encoding; the longest matching prefix wins.
#[derive(Debug, Clone)]
pub struct ModelEncodings {
    table: Vec<(String, EncodingName)>,
    default: EncodingName,
}

impl ModelEncodings {
    pub fn new(mut table: Vec<(String, EncodingName)>, default: EncodingName) -> Self {
        // Longest prefix first so the first match is the most specific one.
        table.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        ModelEncodings { table, default }
    }

    /// OpenAI's published mapping: the gpt-4o generation and later use o200k_base,
    /// gpt-4 and gpt-3.5 use cl100k_base.
    pub fn builtin(default: EncodingName) -> Self {
        let o200k = [
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "o1",
            "o3",
            "o4",
            "chatgpt-4o",
            "gpt-oss",
        ];
        let cl100k = [
            "gpt-4",
            "gpt-3.5",
            "gpt-35",
            "text-embedding-3",
            "text-embedding-ada",
        ];
        let table = o200k
            .iter()
            .map(|p| (p.to_string(), EncodingName::O200kBase))
            .chain(
                cl100k
                    .iter()
                    .map(|p| (p.to_string(), EncodingName::Cl100kBase)),
            )
            .collect();
        ModelEncodings::new(table, default)
    }

    pub fn for_model(&self, model: &str) -> EncodingName {
        // Provider-qualified names ("openai/gpt-4o") are matched on their last segment.
        let bare = model.rsplit('/').next().unwrap_or(model);
        self.table
            .iter()
            .find(|(prefix, _)| bare.starts_with(prefix.as_str()))
            .map(|(_, enc)| *enc)
            .unwrap_or(self.default)
    }

    fn uses(&self, enc: EncodingName) -> bool {
        self.default == enc || self.table.iter().any(|(_, e)| *e == enc)
    }
}

/// Per-message overhead of the chat format (OpenAI cookbook, gpt-3.5-turbo-0613 and later).
const TOKENS_PER_MESSAGE: usize = 3;
const TOKENS_PER_NAME: usize = 1;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING_TOKENS: usize = 3;

pub struct Tokenizers {
    encodings: ModelEncodings,
    o200k: Option<CoreBPE>,
    cl100k: Option<CoreBPE>,
}

impl Tokenizers {
    /// Builds every encoding the mapping can select. Called once per VM.
    pub fn build(encodings: ModelEncodings) -> Result<Self, String> {
        let o200k = if encodings.uses(EncodingName::O200kBase) {
            Some(tiktoken_rs::o200k_base().map_err(|e| format!("o200k_base: {e}"))?)
        } else {
            None
        };
        let cl100k = if encodings.uses(EncodingName::Cl100kBase) {
            Some(tiktoken_rs::cl100k_base().map_err(|e| format!("cl100k_base: {e}"))?)
        } else {
            None
        };
        Ok(Tokenizers {
            encodings,
            o200k,
            cl100k,
        })
    }

    fn bpe(&self, model: &str) -> Option<&CoreBPE> {
        match self.encodings.for_model(model) {
            EncodingName::O200kBase => self.o200k.as_ref(),
            EncodingName::Cl100kBase => self.cl100k.as_ref(),
        }
    }

    /// Tokens of plain text under the model's encoding; special tokens count as text.
    pub fn count_text(&self, model: &str, text: &str) -> usize {
        match self.bpe(model) {
            Some(bpe) => bpe.encode_ordinary(text).len(),
            // Unreachable by construction (build() loads every mapped encoding);
            // a byte-based upper bound keeps billing safe if it ever happens.
            None => text.len(),
        }
    }

    /// Estimated prompt tokens of a chat request: messages with the chat format's
    /// overhead, plus the tool definitions as the model sees them (JSON text).
    pub fn count_prompt(&self, req: &ChatRequest) -> usize {
        let mut total = REPLY_PRIMING_TOKENS;
        for m in &req.messages {
            total += TOKENS_PER_MESSAGE;
            total += self.count_text(&req.model, &m.role);
            total += self.count_text(&req.model, &m.text);
            if let Some(name) = &m.name {
                total += TOKENS_PER_NAME + self.count_text(&req.model, name);
            }
        }
        if let Some(tools) = &req.tools_json {
            total += self.count_text(&req.model, tools);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_request::ChatRequest;

    #[test]
    fn builtin_mapping_picks_family_encodings() {
        let m = ModelEncodings::builtin(EncodingName::O200kBase);
        assert_eq!(m.for_model("gpt-4o-mini"), EncodingName::O200kBase);
        assert_eq!(m.for_model("gpt-4-turbo"), EncodingName::Cl100kBase);
        assert_eq!(m.for_model("gpt-3.5-turbo"), EncodingName::Cl100kBase);
        assert_eq!(m.for_model("openai/gpt-4.1"), EncodingName::O200kBase);
        assert_eq!(m.for_model("llama-3-70b"), EncodingName::O200kBase);
    }

    #[test]
    fn counts_known_strings() {
        let t = Tokenizers::build(ModelEncodings::builtin(EncodingName::O200kBase)).unwrap();
        // Reference values from the Python tiktoken package.
        assert_eq!(t.count_text("gpt-4o", "hello world"), 2);
        assert_eq!(t.count_text("gpt-4", "hello world"), 2);
        assert_eq!(t.count_text("gpt-4o", ""), 0);
    }

    #[test]
    fn prompt_estimate_matches_cookbook_formula() {
        let t = Tokenizers::build(ModelEncodings::builtin(EncodingName::O200kBase)).unwrap();
        let req = ChatRequest::parse(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#,
        )
        .unwrap();
        // 3 priming + 3 per message + "user" (1) + "hello world" (2)
        assert_eq!(t.count_prompt(&req), 9);
    }
}
