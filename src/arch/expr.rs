//! The arithmetic of rule files: shapes and conditions written over config values, such as
//! `(num_attention_heads + 2*num_key_value_heads) * head_dim` or `!tie_word_embeddings`.
//!
//! Grammar: integers, identifiers (letters, digits, `_`, `.` for nested config objects), `+ - * /`
//! (integer division), `%`, unary `!` (1 when the operand is 0 or undefined), parentheses, and
//! `key == 'text'` (1 when a string config value equals the text). An identifier the
//! config does not define makes the whole expression undefined (`None`), which rules treat as
//! "this parameter does not exist here".

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(i64),
    Var(String),
    Not(Box<Expr>),
    Bin(Box<Expr>, char, Box<Expr>),
    /// A string config value compared with a literal.
    StrEq(String, String),
}

/// Where expressions read config values.
pub trait Env {
    fn int(&self, name: &str) -> Option<i64>;
    fn string(&self, name: &str) -> Option<String>;
}

impl Expr {
    pub fn parse(src: &str) -> Result<Expr, String> {
        let toks = tokenize(src)?;
        let mut p = Parser { toks: &toks, pos: 0 };
        let e = p.expr()?;
        if p.pos != toks.len() {
            return Err(format!("`{src}`: unexpected `{}`", toks[p.pos]));
        }
        Ok(e)
    }

    /// Evaluate with `env` giving each identifier's value.
    /// Every config key the expression reads.
    pub fn vars(&self, out: &mut Vec<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(v) | Expr::StrEq(v, _) => out.push(v.clone()),
            Expr::Not(e) => e.vars(out),
            Expr::Bin(a, _, b) => {
                a.vars(out);
                b.vars(out);
            }
        }
    }

    pub fn eval(&self, env: &dyn Env) -> Option<i64> {
        let var = |v: &str| env.int(v);
        match self {
            Expr::Num(n) => Some(*n),
            Expr::Var(v) => var(v),
            Expr::StrEq(v, lit) => Some((env.string(v).as_deref() == Some(lit.as_str())) as i64),
            // An undefined operand counts as 0: `!q_lora_rank` holds when the key is absent or null.
            Expr::Not(e) => Some(e.eval(env).is_none_or(|x| x == 0) as i64),
            Expr::Bin(a, op, b) => {
                let (a, b) = (a.eval(env)?, b.eval(env)?);
                match op {
                    '+' => a.checked_add(b),
                    '-' => a.checked_sub(b),
                    '*' => a.checked_mul(b),
                    '/' => a.checked_div(b),
                    '%' => a.checked_rem(b),
                    _ => None,
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(i64),
    Ident(String),
    Str(String),
    Op(char),
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Num(n) => write!(f, "{n}"),
            Tok::Ident(s) => f.write_str(s),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Op(c) => write!(f, "{c}"),
        }
    }
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i] as char;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Tok::Num(src[start..i].parse().map_err(|_| format!("`{src}`: number too large"))?));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            out.push(Tok::Ident(src[start..i].to_string()));
        } else if c == '\'' {
            let end = src[i + 1..].find('\'').ok_or_else(|| format!("`{src}`: unterminated string"))?;
            out.push(Tok::Str(src[i + 1..i + 1 + end].to_string()));
            i += end + 2;
        } else if c == '=' && b.get(i + 1) == Some(&b'=') {
            out.push(Tok::Op('='));
            i += 2;
        } else if "+-*/%()!".contains(c) {
            out.push(Tok::Op(c));
            i += 1;
        } else {
            return Err(format!("`{src}`: unexpected character `{c}`"));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
}

impl Parser<'_> {
    fn peek_op(&self) -> Option<char> {
        match self.toks.get(self.pos) {
            Some(Tok::Op(c)) => Some(*c),
            _ => None,
        }
    }
    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = self.term()?;
        while let Some(op @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            e = Expr::Bin(Box::new(e), op, Box::new(self.term()?));
        }
        Ok(e)
    }
    fn term(&mut self) -> Result<Expr, String> {
        let mut e = self.factor()?;
        while let Some(op @ ('*' | '/' | '%')) = self.peek_op() {
            self.pos += 1;
            e = Expr::Bin(Box::new(e), op, Box::new(self.factor()?));
        }
        Ok(e)
    }
    fn factor(&mut self) -> Result<Expr, String> {
        let t = self.toks.get(self.pos).cloned().ok_or("unexpected end of expression")?;
        self.pos += 1;
        match t {
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Ident(s) => {
                if self.peek_op() == Some('=') {
                    self.pos += 1;
                    return match self.toks.get(self.pos).cloned() {
                        Some(Tok::Str(lit)) => {
                            self.pos += 1;
                            Ok(Expr::StrEq(s, lit))
                        }
                        _ => Err(format!("`{s} ==` must be followed by a 'quoted' string")),
                    };
                }
                Ok(Expr::Var(s))
            }
            Tok::Op('!') => Ok(Expr::Not(Box::new(self.factor()?))),
            Tok::Op('(') => {
                let e = self.expr()?;
                match self.toks.get(self.pos) {
                    Some(Tok::Op(')')) => {
                        self.pos += 1;
                        Ok(e)
                    }
                    _ => Err("missing `)`".into()),
                }
            }
            other => Err(format!("unexpected `{other}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E;
    impl Env for E {
        fn int(&self, name: &str) -> Option<i64> {
            ints(name)
        }
        fn string(&self, name: &str) -> Option<String> {
            (name == "topk_method").then(|| "noaux_tc".to_string())
        }
    }
    const ENV: &E = &E;

    fn ints(name: &str) -> Option<i64> {
        match name {
            "heads" => Some(8),
            "kv" => Some(2),
            "head_dim" => Some(16),
            "tie" => Some(0),
            "vision_config.depth" => Some(3),
            _ => None,
        }
    }

    #[test]
    fn arithmetic_and_precedence() {
        let e = Expr::parse("(heads + 2*kv) * head_dim").unwrap();
        assert_eq!(e.eval(ENV), Some(192));
        assert_eq!(Expr::parse("heads - kv * 2 / 4").unwrap().eval(ENV), Some(7));
        assert_eq!(Expr::parse("!tie").unwrap().eval(ENV), Some(1));
        assert_eq!(Expr::parse("vision_config.depth % 2").unwrap().eval(ENV), Some(1));
        assert_eq!(Expr::parse("topk_method == 'noaux_tc'").unwrap().eval(ENV), Some(1));
        assert_eq!(Expr::parse("!(topk_method == 'greedy')").unwrap().eval(ENV), Some(1));
        assert!(Expr::parse("topk_method == 3").is_err());
    }

    #[test]
    fn undefined_and_errors() {
        assert_eq!(Expr::parse("missing * 2").unwrap().eval(ENV), None);
        assert_eq!(Expr::parse("!missing").unwrap().eval(ENV), Some(1));
        assert_eq!(Expr::parse("heads / 0").unwrap().eval(ENV), None);
        assert!(Expr::parse("heads +").is_err());
        assert!(Expr::parse("(heads").is_err());
        assert!(Expr::parse("heads $ 2").is_err());
        assert!(Expr::parse("heads kv").is_err());
    }
}
