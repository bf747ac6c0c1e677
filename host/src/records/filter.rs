//! The filter language of list queries, close to OData's `$filter`:
//!
//! ```text
//! stage eq 'customer' and (annual_value ge 1000 or email is null)
//! tags contains 'vip' and not (country in ('FR', 'DE'))
//! ```
//!
//! Operators: `eq ne gt ge lt le`, `in (…)`, `contains`, `startswith`, `is null`,
//! `is not null`, combined with `and`, `or`, `not` and parentheses. Strings are single-quoted
//! (`''` is a quote); numbers and `true`/`false` are bare. System fields start with `_`
//! (`_id`, `_created_at`, …).

use std::fmt;

/// The longest filter accepted, in bytes.
pub const MAX_FILTER_LENGTH: usize = 4096;
/// The most predicates one filter may hold.
pub const MAX_PREDICATES: usize = 64;
/// The deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Comparison {
    const ALL: [(&'static str, Comparison); 6] = [
        ("eq", Comparison::Eq),
        ("ne", Comparison::Ne),
        ("gt", Comparison::Gt),
        ("ge", Comparison::Ge),
        ("lt", Comparison::Lt),
        ("le", Comparison::Le),
    ];

    pub fn keyword(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map(|(word, _)| *word)
            .expect("every comparison has a keyword")
    }

    pub fn sql(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Ne => "<>",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare {
        field: String,
        op: Comparison,
        value: Literal,
    },
    In {
        field: String,
        values: Vec<Literal>,
    },
    Contains {
        field: String,
        value: Literal,
    },
    StartsWith {
        field: String,
        value: Literal,
    },
    IsNull {
        field: String,
        negated: bool,
    },
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Text(text) => write!(f, "'{}'", text.replace('\'', "''")),
            Literal::Int(int) => write!(f, "{int}"),
            // Debug keeps a decimal point or exponent, so the literal reads back as a float.
            Literal::Float(float) => write!(f, "{float:?}"),
            Literal::Bool(boolean) => write!(f, "{boolean}"),
        }
    }
}

/// Prints the canonical, fully parenthesised form; parsing it gives back the same filter.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(left, right) => write!(f, "({left} and {right})"),
            Filter::Or(left, right) => write!(f, "({left} or {right})"),
            Filter::Not(inner) => write!(f, "not {inner}"),
            Filter::Compare { field, op, value } => write!(f, "{field} {} {value}", op.keyword()),
            Filter::In { field, values } => {
                let values: Vec<String> = values.iter().map(ToString::to_string).collect();
                write!(f, "{field} in ({})", values.join(", "))
            }
            Filter::Contains { field, value } => write!(f, "{field} contains {value}"),
            Filter::StartsWith { field, value } => write!(f, "{field} startswith {value}"),
            Filter::IsNull {
                field,
                negated: false,
            } => write!(f, "{field} is null"),
            Filter::IsNull {
                field,
                negated: true,
            } => write!(f, "{field} is not null"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Literal(Literal),
    Open,
    Close,
    Comma,
}

/// A filter that does not parse, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: {message} (at character {position})")]
pub struct FilterError {
    pub message: String,
    pub position: usize,
}

fn error(position: usize, message: impl Into<String>) -> FilterError {
    FilterError {
        message: message.into(),
        position,
    }
}

fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                tokens.push((
                    start,
                    match c {
                        '(' => Token::Open,
                        ')' => Token::Close,
                        _ => Token::Comma,
                    },
                ));
            }
            '\'' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err(error(start, "unterminated string")),
                        Some((_, '\'')) if chars.peek().map(|&(_, c)| c) == Some('\'') => {
                            chars.next();
                            text.push('\'');
                        }
                        Some((_, '\'')) => break,
                        Some((_, c)) => text.push(c),
                    }
                }
                tokens.push((start, Token::Literal(Literal::Text(text))));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    let sign_after_exponent = (c == '-' || c == '+')
                        && matches!(input[..i].chars().last(), Some('e' | 'E'));
                    if c.is_ascii_digit()
                        || c == '.'
                        || c == 'e'
                        || c == 'E'
                        || (i == start && c == '-')
                        || sign_after_exponent
                    {
                        end = i + c.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let text = &input[start..end];
                let literal = if let Ok(int) = text.parse::<i64>() {
                    Literal::Int(int)
                } else {
                    match text.parse::<f64>() {
                        Ok(float) if float.is_finite() => Literal::Float(float),
                        _ => return Err(error(start, format!("`{text}` is not a number"))),
                    }
                };
                tokens.push((start, Token::Literal(literal)));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    // Dots for a workflow branch's `steps.<step>.<key>`; a list has no such field.
                    if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                        end = i + 1;
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &input[start..end];
                tokens.push((
                    start,
                    match word {
                        "true" => Token::Literal(Literal::Bool(true)),
                        "false" => Token::Literal(Literal::Bool(false)),
                        _ => Token::Word(word.to_owned()),
                    },
                ));
            }
            other => return Err(error(start, format!("unexpected character `{other}`"))),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    position: usize,
    end: usize,
    predicates: usize,
}

const KEYWORDS: [&str; 9] = [
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "contains",
    "startswith",
    "eq",
];

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position).map(|(_, token)| token)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.position)
            .map_or(self.end, |(offset, _)| *offset)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self
            .tokens
            .get(self.position)
            .map(|(_, token)| token.clone());
        self.position += 1;
        token
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut left = self.and(depth)?;
        while self.eat_word("or") {
            let right = self.and(depth)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut left = self.unary(depth)?;
        while self.eat_word("and") {
            let right = self.unary(depth)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, FilterError> {
        if depth > MAX_DEPTH {
            return Err(error(
                self.offset(),
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        if self.eat_word("not") {
            return Ok(Filter::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.position += 1;
            let inner = self.or(depth + 1)?;
            let at = self.offset();
            if self.next() != Some(Token::Close) {
                return Err(error(at, "expected `)`"));
            }
            return Ok(inner);
        }
        self.predicate()
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        let at = self.offset();
        match self.next() {
            Some(Token::Literal(literal)) => Ok(literal),
            _ => Err(error(
                at,
                "expected a value: a 'quoted string', a number, true or false",
            )),
        }
    }

    fn predicate(&mut self) -> Result<Filter, FilterError> {
        let at = self.offset();
        let field = match self.next() {
            Some(Token::Word(word)) if !KEYWORDS.contains(&word.as_str()) => word,
            _ => return Err(error(at, "expected a field name")),
        };
        self.predicates += 1;
        if self.predicates > MAX_PREDICATES {
            return Err(error(at, format!("more than {MAX_PREDICATES} conditions")));
        }
        let at = self.offset();
        let operator = match self.next() {
            Some(Token::Word(word)) => word,
            _ => {
                return Err(error(
                    at,
                    format!(
                        "expected an operator after `{field}`: eq, ne, gt, ge, lt, le, in, contains, startswith, is"
                    ),
                ));
            }
        };
        if let Some((_, op)) = Comparison::ALL.iter().find(|(word, _)| *word == operator) {
            return Ok(Filter::Compare {
                field,
                op: *op,
                value: self.literal()?,
            });
        }
        match operator.as_str() {
            "contains" => Ok(Filter::Contains {
                field,
                value: self.literal()?,
            }),
            "startswith" => Ok(Filter::StartsWith {
                field,
                value: self.literal()?,
            }),
            "is" => {
                let negated = self.eat_word("not");
                let at = self.offset();
                if !self.eat_word("null") {
                    return Err(error(at, "expected `null` after `is`"));
                }
                Ok(Filter::IsNull { field, negated })
            }
            "in" => {
                let at = self.offset();
                if self.next() != Some(Token::Open) {
                    return Err(error(at, "expected `(` after `in`"));
                }
                let mut values = vec![self.literal()?];
                loop {
                    let at = self.offset();
                    match self.next() {
                        Some(Token::Comma) => values.push(self.literal()?),
                        Some(Token::Close) => break,
                        _ => return Err(error(at, "expected `,` or `)`")),
                    }
                }
                if values.len() > 500 {
                    return Err(error(at, "`in` takes at most 500 values"));
                }
                Ok(Filter::In { field, values })
            }
            other => Err(error(at, format!("unknown operator `{other}`"))),
        }
    }
}

/// Parses a filter expression.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    if input.len() > MAX_FILTER_LENGTH {
        return Err(error(
            MAX_FILTER_LENGTH,
            format!("longer than {MAX_FILTER_LENGTH} bytes"),
        ));
    }
    let tokens = tokenize(input)?;
    let mut parser = Parser {
        tokens,
        position: 0,
        end: input.len(),
        predicates: 0,
    };
    if parser.peek().is_none() {
        return Err(error(0, "the filter is empty"));
    }
    let filter = parser.or(0)?;
    if parser.position < parser.tokens.len() {
        return Err(error(
            parser.offset(),
            "expected `and`, `or` or the end of the filter",
        ));
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn and_binds_tighter_than_or() {
        let filter = parse("a eq 1 or b eq 2 and c is null").unwrap();
        assert_eq!(filter.to_string(), "(a eq 1 or (b eq 2 and c is null))");
    }

    #[test]
    fn strings_escape_quotes_by_doubling() {
        let filter = parse("name eq 'O''Brien'").unwrap();
        assert_eq!(
            filter,
            Filter::Compare {
                field: "name".into(),
                op: Comparison::Eq,
                value: Literal::Text("O'Brien".into())
            }
        );
    }

    #[test]
    fn every_form_parses() {
        let text = "not (stage in ('lead', 'customer') or tags contains 'vip') and score ge -2.5e3 \
                    and name startswith 'A' and flag eq true and _created_at gt '2026-01-01T00:00:00Z' and x is not null";
        let filter = parse(text).unwrap();
        assert_eq!(parse(&filter.to_string()).unwrap(), filter);
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(parse("a eq").unwrap_err().position, 4);
        assert_eq!(parse("a eq 'x").unwrap_err().message, "unterminated string");
        assert!(
            parse("a foo 1")
                .unwrap_err()
                .message
                .contains("unknown operator `foo`")
        );
        assert!(parse("(a eq 1").unwrap_err().message.contains("`)`"));
        assert!(parse("a eq 1 b").is_err());
        assert!(parse("").is_err());
        assert!(parse(&"not ".repeat(40)).is_err());
    }

    fn field() -> impl Strategy<Value = String> {
        "_?[a-z][a-z0-9_]{0,10}".prop_filter("not a keyword", |name| {
            !KEYWORDS.contains(&name.as_str())
                && !["true", "false", "ne", "gt", "ge", "lt", "le"].contains(&name.as_str())
        })
    }

    fn literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            any::<String>().prop_map(Literal::Text),
            any::<i64>().prop_map(Literal::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Literal::Float),
            any::<bool>().prop_map(Literal::Bool),
        ]
    }

    fn filter() -> impl Strategy<Value = Filter> {
        let comparison = prop_oneof![
            Just(Comparison::Eq),
            Just(Comparison::Ne),
            Just(Comparison::Gt),
            Just(Comparison::Ge),
            Just(Comparison::Lt),
            Just(Comparison::Le)
        ];
        let leaf = prop_oneof![
            (field(), comparison, literal()).prop_map(|(field, op, value)| Filter::Compare {
                field,
                op,
                value
            }),
            (field(), prop::collection::vec(literal(), 1..4))
                .prop_map(|(field, values)| Filter::In { field, values }),
            (field(), literal()).prop_map(|(field, value)| Filter::Contains { field, value }),
            (field(), literal()).prop_map(|(field, value)| Filter::StartsWith { field, value }),
            (field(), any::<bool>()).prop_map(|(field, negated)| Filter::IsNull { field, negated }),
        ];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|a| Filter::Not(Box::new(a))),
            ]
        })
    }

    proptest! {
        #[test]
        fn printing_then_parsing_gives_back_the_same_filter(filter in filter()) {
            prop_assert_eq!(parse(&filter.to_string()).unwrap(), filter);
        }

        #[test]
        fn arbitrary_input_never_panics(input in any::<String>()) {
            let _ = parse(&input);
        }
    }
}
