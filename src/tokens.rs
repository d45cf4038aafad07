//! Token counting per model. [`Tokenizers`] is shared by every request on a
//! VM; an encoding is built the first time a model needs it (the default one
//! at configure), so a VM holds only the encodings its traffic uses.

use std::sync::OnceLock;

use crate::bpe::Encoding;
pub use crate::bpe::EncodingName;
use crate::chat_request::ChatRequest;

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
}

/// Counts the tokens of text, whole or as it grows (see `running_count`).
pub trait TextCounter {
    fn count(&self, text: &str) -> usize;
    /// The leading part of `text` that no text appended later can re-split:
    /// `(its length in bytes, its tokens)`.
    fn count_settled(&self, text: &str) -> (usize, usize);
}

impl TextCounter for Encoding {
    fn count(&self, text: &str) -> usize {
        Encoding::count(self, text)
    }

    fn count_settled(&self, text: &str) -> (usize, usize) {
        Encoding::count_settled(self, text)
    }
}

/// One token per byte: an upper bound, used only if an encoding cannot be
/// built, and by tests that need a counter they can predict.
pub struct ByteCounter;

impl TextCounter for ByteCounter {
    fn count(&self, text: &str) -> usize {
        text.len()
    }

    fn count_settled(&self, text: &str) -> (usize, usize) {
        (text.len(), text.len())
    }
}

/// Per-message overhead of the chat format (OpenAI cookbook, gpt-3.5-turbo-0613 and later).
const TOKENS_PER_MESSAGE: usize = 3;
const TOKENS_PER_NAME: usize = 1;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING_TOKENS: usize = 3;

pub struct Tokenizers {
    encodings: ModelEncodings,
    o200k: OnceLock<Option<Encoding>>,
    cl100k: OnceLock<Option<Encoding>>,
}

impl Tokenizers {
    /// Builds the default encoding now (a broken build fails the configure,
    /// not a request); the others wait for a model that uses them.
    pub fn build(encodings: ModelEncodings) -> Result<Self, String> {
        let tokenizers = Tokenizers {
            encodings,
            o200k: OnceLock::new(),
            cl100k: OnceLock::new(),
        };
        let default = tokenizers.encodings.default;
        tokenizers
            .cell(default)
            .set(Some(Encoding::load(default)?))
            .map_err(|_| "encoding built twice".to_string())?;
        Ok(tokenizers)
    }

    fn cell(&self, name: EncodingName) -> &OnceLock<Option<Encoding>> {
        match name {
            EncodingName::O200kBase => &self.o200k,
            EncodingName::Cl100kBase => &self.cl100k,
        }
    }

    /// The counter for a model's encoding, built on first use.
    pub fn counter(&self, model: &str) -> &dyn TextCounter {
        let name = self.encodings.for_model(model);
        match self.cell(name).get_or_init(|| Encoding::load(name).ok()) {
            Some(encoding) => encoding,
            // The packed encodings are compiled in and tested: unreachable in
            // practice; a byte count is an upper bound that keeps billing safe.
            None => &ByteCounter,
        }
    }

    /// Tokens of plain text under the model's encoding; special tokens count as text.
    pub fn count_text(&self, model: &str, text: &str) -> usize {
        self.counter(model).count(text)
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
