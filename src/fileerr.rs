//! Errors in configuration files, as one line that names the file, the line
//! and the field: `config file /etc/ksense.toml, line 4, field `model.warmup`: ...`.
//! Shared by the TOML configuration and the YAML web configuration.

use std::path::Path;

/// One line: what, where, which field, why. `line` is 1-based.
pub fn located(kind: &str, file: &Path, line: Option<usize>, field: &str, msg: &str) -> String {
    let msg = one_line(msg);
    // a key the parser could not split (`{a\n\nkey:` in YAML) carries newlines
    let field = one_line(field);
    let field = if field.is_empty() || field == "." { "(document)" } else { field.as_str() };
    match line {
        Some(n) => format!("{kind} {}, line {n}, field `{field}`: {msg}", file.display()),
        None => format!("{kind} {}, field `{field}`: {msg}", file.display()),
    }
}

/// Folds a multi-line message (parsers like to draw carets) into one line.
pub fn one_line(msg: &str) -> String {
    msg.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// The first line with content (not blank, not a comment): where a
/// document-level error is reported when the parser gives no position.
pub fn first_content_line(text: &str) -> Option<usize> {
    text.lines().position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).map(|i| i + 1)
}

/// Where to report `field`: its line, else the nearest enclosing key's, else
/// the document's first line.
pub fn line_for(text: &str, field: &str) -> Option<usize> {
    line_of_key(text, field).or_else(|| first_content_line(text))
}

/// The 1-based line holding byte `offset` of `text`.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Where a key is written, found in the text: `path` is the dotted field
/// (`tls_server_config.cert_file`, `web.listen_address`). Works for block
/// YAML (indentation) and for TOML (`[table]` headers and `key =`). Falls
/// back to the line of the nearest enclosing key that is found; `None` when
/// not even the first segment is written in the file.
pub fn line_of_key(text: &str, path: &str) -> Option<usize> {
    let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let mut best = None;
    let mut table: Vec<String> = Vec::new(); // current TOML table
                                             // YAML: the chain of (indent, key) above the current line.
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        if let Some(h) = content.strip_prefix('[') {
            let name = h.trim_start_matches('[').split(']').next().unwrap_or("");
            table = name.split('.').map(|s| unquote(s.trim()).to_string()).collect();
            stack.clear();
            let full: Vec<&str> = table.iter().map(String::as_str).collect();
            best = better(best, &segs, &full, i + 1);
            continue;
        }
        let Some(key) = key_of(content) else { continue };
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let full: Vec<&str> = table.iter().map(String::as_str).chain(stack.iter().map(|(_, k)| k.as_str())).collect();
        best = better(best, &segs, &full, i + 1);
    }
    best.map(|(_, line)| line)
}

/// Keeps the candidate that matches the longest prefix of `want` (first one wins a tie).
fn better(best: Option<(usize, usize)>, want: &[&str], have: &[&str], line: usize) -> Option<(usize, usize)> {
    if have.is_empty() || have.len() > want.len() || want[..have.len()] != *have {
        return best;
    }
    match best {
        Some((n, _)) if n >= have.len() => best,
        _ => Some((have.len(), line)),
    }
}

/// The key of `key: value` (YAML) or `key = value` (TOML), quotes removed.
fn key_of(content: &str) -> Option<&str> {
    let content = content.strip_prefix("- ").unwrap_or(content);
    let end = content.find([':', '='])?;
    let key = unquote(content[..end].trim());
    (!key.is_empty() && !key.contains(char::is_whitespace)).then_some(key)
}

fn unquote(s: &str) -> &str {
    s.trim_matches(|c| c == '"' || c == '\'')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_yaml_and_toml_keys() {
        let y = "# c\ntls_server_config:\n  cert_file: a\n  key_file: b\nbasic_auth_users:\n  alice: x\n";
        assert_eq!(line_of_key(y, "tls_server_config.key_file"), Some(4));
        assert_eq!(line_of_key(y, "basic_auth_users.alice"), Some(6));
        assert_eq!(line_of_key(y, "tls_server_config.min_version"), Some(2), "falls back to the section");
        assert_eq!(line_of_key(y, "http_server_config"), None);
        let t = "[web]\nlisten_address = \":1\"\n[model]\nwarmup = \"1s\"\n";
        assert_eq!(line_of_key(t, "model.warmup"), Some(4));
        assert_eq!(line_of_key(t, "web.listen_address"), Some(2));
        assert_eq!(line_of_key(t, "web"), Some(1));
    }

    #[test]
    fn one_line_messages() {
        let e = located("config file", Path::new("/k.toml"), Some(3), "web.x", "bad\n  |\n3 | x\nworse");
        assert_eq!(e, "config file /k.toml, line 3, field `web.x`: bad; |; 3 | x; worse");
        assert_eq!(line_of_offset("a\nb\nc", 2), 2);
        // the key of `{a\n\ntls_server_config:`, as serde_yaml names it
        let e = located("web config file", Path::new("/w.yml"), Some(1), "a\ntls_server_config", "unknown field");
        assert_eq!(e, "web config file /w.yml, line 1, field `a; tls_server_config`: unknown field");
    }
}
