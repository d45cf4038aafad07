//! Prints the filter's token counts for a corpus, for the reference test
//! against the Python `tiktoken` package (tests/reference).
//! Input on stdin: `[{"model": "...", "text": "..."}, …]`; output: `[count, …]`.

use std::io::Read;

use tollgate_filter::tokens::{EncodingName, ModelEncodings, Tokenizers};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let items: Vec<serde_json::Value> = serde_json::from_str(&input)?;
    let tokenizers = Tokenizers::build(ModelEncodings::builtin(EncodingName::O200kBase))?;
    let counts: Vec<usize> = items
        .iter()
        .map(|i| {
            let model = i["model"].as_str().unwrap_or_default();
            tokenizers.count_text(model, i["text"].as_str().unwrap_or_default())
        })
        .collect();
    println!("{}", serde_json::to_string(&counts)?);
    Ok(())
}
