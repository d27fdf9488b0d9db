//! The expression language of `rules:if` and `workflow:rules:if` ‹lib/gitlab/ci/pipeline/expression›:
//! variables (`$VAR`), strings, `null`, regular expressions (`/re/i`), `==`, `!=`, `=~`,
//! `!~`, `&&` (binds tighter), `||` and parentheses.

use std::collections::HashMap;

use regex::RegexBuilder;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Var(String),
    Str(String),
    Regex(String, String),
    Null,
    Eq,
    Ne,
    Match,
    NoMatch,
    And,
    Or,
    Open,
    Close,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Str(String),
    Regex(String, String),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Str(s) => !s.is_empty(),
            Value::Regex(..) => true,
        }
    }
}

/// The most tokens one expression may have: GitLab's lexer stops at the same count
/// (`Gitlab::Ci::Pipeline::Expression::Lexer::MAX_TOKENS`, "Too many tokens!"). It also
/// bounds the parser's recursion: parentheses nest at most this deep.
pub const MAX_TOKENS: usize = 100;

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if tokens.len() > MAX_TOKENS {
            return Err("Too many tokens!".into());
        }
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '=' if next == Some('=') => {
                tokens.push(Token::Eq);
                i += 2;
            }
            '=' if next == Some('~') => {
                tokens.push(Token::Match);
                i += 2;
            }
            '!' if next == Some('=') => {
                tokens.push(Token::Ne);
                i += 2;
            }
            '!' if next == Some('~') => {
                tokens.push(Token::NoMatch);
                i += 2;
            }
            '&' if next == Some('&') => {
                tokens.push(Token::And);
                i += 2;
            }
            '|' if next == Some('|') => {
                tokens.push(Token::Or);
                i += 2;
            }
            '$' => {
                let braced = next == Some('{');
                let start = if braced { i + 2 } else { i + 1 };
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                if end == start {
                    return Err(format!("invalid variable at offset {i}"));
                }
                tokens.push(Token::Var(chars[start..end].iter().collect()));
                i = end;
                if braced {
                    if chars.get(i) != Some(&'}') {
                        return Err(format!("unclosed variable at offset {start}"));
                    }
                    i += 1;
                }
            }
            '"' | '\'' => {
                let mut end = i + 1;
                while end < chars.len() && chars[end] != c {
                    end += 1;
                }
                if end >= chars.len() {
                    return Err("unterminated string".into());
                }
                tokens.push(Token::Str(chars[i + 1..end].iter().collect()));
                i = end + 1;
            }
            '/' => {
                let mut end = i + 1;
                let mut pattern = String::new();
                while end < chars.len() && chars[end] != '/' {
                    if chars[end] == '\\' && chars.get(end + 1) == Some(&'/') {
                        pattern.push('/');
                        end += 2;
                        continue;
                    }
                    pattern.push(chars[end]);
                    end += 1;
                }
                if end >= chars.len() {
                    return Err("unterminated regular expression".into());
                }
                end += 1;
                let mut flags = String::new();
                while end < chars.len() && chars[end].is_ascii_alphabetic() {
                    flags.push(chars[end]);
                    end += 1;
                }
                // Checked here, so a bad pattern is an error even when never matched.
                RegexBuilder::new(&pattern)
                    .build()
                    .map_err(|e| format!("invalid regular expression /{pattern}/: {e}"))?;
                tokens.push(Token::Regex(pattern, flags));
                i = end;
            }
            'n' if chars[i..].starts_with(&['n', 'u', 'l', 'l']) => {
                tokens.push(Token::Null);
                i += 4;
            }
            _ => return Err(format!("unexpected {c:?} at offset {i}")),
        }
    }
    if tokens.len() > MAX_TOKENS {
        return Err("Too many tokens!".into());
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    vars: &'a HashMap<String, String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<Value, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = if left.truthy() { left } else { right };
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Value, String> {
        let mut left = self.comparison()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            let right = self.comparison()?;
            left = if left.truthy() { right } else { left };
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Value, String> {
        let left = self.operand()?;
        let op = match self.peek() {
            Some(t @ (Token::Eq | Token::Ne | Token::Match | Token::NoMatch)) => t.clone(),
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.operand()?;
        let result = match op {
            Token::Eq => left == right,
            Token::Ne => left != right,
            Token::Match => matches(&left, &right)?,
            _ => !matches(&left, &right)?,
        };
        Ok(if result {
            Value::Str("true".into())
        } else {
            Value::Null
        })
    }

    fn operand(&mut self) -> Result<Value, String> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or("expression ends too early")?;
        self.pos += 1;
        match token {
            Token::Var(name) => Ok(self
                .vars
                .get(&name)
                .map_or(Value::Null, |v| Value::Str(v.clone()))),
            Token::Str(s) => Ok(Value::Str(s)),
            Token::Regex(p, f) => Ok(Value::Regex(p, f)),
            Token::Null => Ok(Value::Null),
            Token::Open => {
                let value = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("missing )".into());
                }
                self.pos += 1;
                Ok(value)
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

/// `=~`: the right side is a regex literal, or a variable holding `/pattern/flags`.
fn matches(left: &Value, right: &Value) -> Result<bool, String> {
    let (pattern, flags) = match right {
        Value::Regex(p, f) => (p.clone(), f.clone()),
        Value::Str(s) if s.starts_with('/') && s.rfind('/').is_some_and(|end| end > 0) => {
            let end = s.rfind('/').unwrap_or(0);
            (s[1..end].to_string(), s[end + 1..].to_string())
        }
        _ => return Ok(false),
    };
    let text = match left {
        Value::Str(s) => s.as_str(),
        _ => return Ok(false),
    };
    let regex = RegexBuilder::new(&pattern)
        .case_insensitive(flags.contains('i'))
        .multi_line(flags.contains('m'))
        .build()
        .map_err(|e| format!("invalid regular expression /{pattern}/: {e}"))?;
    Ok(regex.is_match(text))
}

/// Evaluates `expression` with `vars`; an error names what is wrong with the expression.
pub fn evaluate(expression: &str, vars: &HashMap<String, String>) -> Result<bool, String> {
    let tokens = tokenize(expression)?;
    if tokens.is_empty() {
        return Err("empty expression".into());
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        vars,
    };
    let value = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(format!("unexpected {:?}", parser.tokens[parser.pos]));
    }
    Ok(value.truthy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str) -> bool {
        let vars: HashMap<String, String> = [
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_PIPELINE_SOURCE", "push"),
            ("EMPTY", ""),
            ("PATTERN", "/^ma/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        evaluate(expr, &vars).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    #[test]
    fn gitlab_expressions() {
        assert!(eval(r#"$CI_COMMIT_BRANCH == "main""#));
        assert!(eval(r#"$CI_COMMIT_BRANCH != 'dev'"#));
        assert!(eval("$CI_COMMIT_BRANCH"));
        assert!(!eval("$EMPTY"));
        assert!(!eval("$UNDEFINED"));
        assert!(eval("$UNDEFINED == null"));
        assert!(eval("$CI_COMMIT_BRANCH =~ /^MA/i"));
        assert!(eval("$CI_COMMIT_BRANCH !~ /^dev/"));
        assert!(eval("$CI_COMMIT_BRANCH =~ $PATTERN"));
        assert!(eval(
            r#"$CI_PIPELINE_SOURCE == "web" || $CI_COMMIT_BRANCH == "main" && $CI_PIPELINE_SOURCE == "push""#
        ));
        assert!(!eval(
            r#"($CI_PIPELINE_SOURCE == "web" || $CI_COMMIT_BRANCH == "main") && $EMPTY"#
        ));
        assert!(eval("${CI_COMMIT_BRANCH} == 'main'"));
    }

    #[test]
    fn bad_expressions_are_errors() {
        let vars = HashMap::new();
        for bad in [
            "$A ==",
            "(\"x\"",
            "$A = 'b'",
            "/unterminated",
            "",
            "$A =~ /(/",
        ] {
            assert!(evaluate(bad, &vars).is_err(), "{bad}");
        }
    }

    #[test]
    fn deep_parentheses_are_refused_not_recursed() {
        let vars = HashMap::new();
        // 50 levels fit in GitLab's 100 tokens…
        let fits = format!("{}$A{}", "(".repeat(49), ")".repeat(49));
        assert_eq!(evaluate(&fits, &vars), Ok(false));
        // …a bomb does not, however deep.
        for depth in [51, 5_000, 100_000] {
            let bomb = format!("{}$A{}", "(".repeat(depth), ")".repeat(depth));
            assert_eq!(evaluate(&bomb, &vars), Err("Too many tokens!".into()));
        }
    }
}
