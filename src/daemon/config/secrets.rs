//! `${VAR}` and `${file:PATH}` references in the configuration: how secrets
//! reach the Kafka client properties without being written in the file.

/// Resolves `${VAR}` (environment) and `${file:PATH}` (file contents, trimmed) in `text`.
pub(super) fn resolve(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` reference".to_string())?;
        let reference = &after[..end];
        let value = match reference.strip_prefix("file:") {
            Some(path) => read_secret_file(path)?,
            None => env(reference)
                .ok_or_else(|| format!("environment variable {reference} is not set"))?,
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The most a `${file:PATH}` secret may hold: a password, a token or a PEM
/// bundle fits; `/dev/zero` or a mistyped log file does not fill memory.
const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a secret file (at most [`MAX_SECRET_FILE_BYTES`]), without its trailing newline.
fn read_secret_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read the secret file {path:?}: {e}");
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "the secret file {path:?} holds more than {MAX_SECRET_FILE_BYTES} bytes"
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("the secret file {path:?} is not UTF-8 text"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
