//! Bearer tokens: who may call what on a coordinator.
//!
//! A coordinator reachable from other machines admits a call only with a token of the kind that
//! call needs: agents send an *agent token* with `Work`, people and scripts a *status token* with
//! `Status`. The kinds are separate so that a status token handed to a dashboard cannot take work
//! or forge results. Tokens travel as `authorization: Bearer …` metadata (over TLS), are compared
//! in constant time, and never appear in a log, a status or an error: [`Token`]'s `Debug` is
//! redacted and no error message here quotes a token or a token file's line.
//!
//! A token file holds one token a line; blank lines and `#` comments are ignored. A coordinator
//! accepts every token in its file, so tokens are rotated by adding the new one, moving the
//! clients over, then removing the old one. A client uses the first token of its file.

use std::fmt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use tonic::metadata::AsciiMetadataValue;

/// The environment variable a client reads its token from when it is given no token file.
pub const TOKEN_ENV: &str = "CRATER_TOKEN";

/// The metadata key (HTTP/2 header) tokens travel in.
pub const AUTHORIZATION: &str = "authorization";

/// Shorter tokens are refused: they could be guessed. `crater-at-home tls init` makes 64
/// characters (32 random bytes).
pub const MIN_TOKEN_CHARS: usize = 16;

/// Longer lines are not tokens (a certificate or a key pasted into the wrong file, say).
const MAX_TOKEN_CHARS: usize = 512;

/// Which calls a token admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `Work`: take jobs and report their results.
    Agent,
    /// `Status` (and later metrics): read-only.
    Status,
}

impl TokenKind {
    /// "an agent token", "a status token": for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            TokenKind::Agent => "an agent token",
            TokenKind::Status => "a status token",
        }
    }

    /// The `serve` flag that gives a coordinator its tokens of this kind.
    pub fn file_flag(self) -> &'static str {
        match self {
            TokenKind::Agent => "--agent-token-file",
            TokenKind::Status => "--status-token-file",
        }
    }
}

/// A secret token. Neither `Debug` nor any error shows it; compare it only through
/// [`Gate::check`], which does so in constant time.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a string is not a token. Says what is wrong with it without quoting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "a token needs at least {MIN_TOKEN_CHARS} characters (`crater-at-home tls init` makes 64)"
    )]
    TooShort,
    #[error("a token has at most {MAX_TOKEN_CHARS} characters")]
    TooLong,
    #[error(
        "a token may only have letters, digits and - . _ ~ + / (= at the end): hex or base64 \
         (`crater-at-home tls init` makes hex)"
    )]
    BadCharacter,
}

impl Token {
    /// A token as written in a file or the environment, surrounding whitespace removed.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.len() < MIN_TOKEN_CHARS {
            return Err(TokenError::TooShort);
        }
        if text.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::TooLong);
        }
        // RFC 6750's b64token: the token travels in a header as it is, and `#` is free to start
        // a comment in token files.
        let body = text.trim_end_matches('=');
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/');
        if body.is_empty() || !body.chars().all(allowed) {
            return Err(TokenError::BadCharacter);
        }
        Ok(Token(text.to_owned()))
    }

    /// The `authorization` metadata value that carries this token, marked sensitive so that
    /// tonic and hyper leave it out of their debug output.
    fn bearer_value(&self) -> AsciiMetadataValue {
        let mut value = AsciiMetadataValue::try_from(format!("Bearer {}", self.0))
            .expect("Token::parse admits header-safe characters only");
        value.set_sensitive(true);
        value
    }
}

/// A token file that cannot be used. Names the file and the line, never the content.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading the token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {}, line {line}: {error}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        error: TokenError,
    },
    #[error(
        "token file {} has no token (one a line; blank lines and # comments are ignored)",
        path.display()
    )]
    Empty { path: PathBuf },
    #[error("{TOKEN_ENV}: {0}")]
    Env(TokenError),
}

/// The tokens in a token file's text: one a line, blank lines and `#` comments ignored.
/// An error gives the 1-based line.
pub fn parse_tokens(text: &str) -> Result<Vec<Token>, (usize, TokenError)> {
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if line.is_empty() {
            continue;
        }
        tokens.push(Token::parse(line).map_err(|e| (i + 1, e))?);
    }
    Ok(tokens)
}

/// Every token in the file at `path`; a file without any is an error.
pub fn read_token_file(path: &Path) -> Result<Vec<Token>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let tokens = parse_tokens(&text).map_err(|(line, error)| TokenFileError::Line {
        path: path.to_owned(),
        line,
        error,
    })?;
    if tokens.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(tokens)
}

/// A client's token: the first one in `token_file`, else `$CRATER_TOKEN`, else none.
pub fn client_token(token_file: Option<&Path>) -> Result<Option<Token>, TokenFileError> {
    if let Some(path) = token_file {
        return Ok(read_token_file(path)?.into_iter().next());
    }
    match std::env::var(TOKEN_ENV) {
        Ok(text) if !text.trim().is_empty() => {
            Token::parse(&text).map(Some).map_err(TokenFileError::Env)
        }
        _ => Ok(None),
    }
}

/// A client's side: adds `authorization: Bearer <token>` to every call, or nothing without a
/// token (a coordinator on loopback may not need one).
#[derive(Clone, Default)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl BearerToken {
    pub fn new(token: Option<&Token>) -> BearerToken {
        BearerToken(token.map(Token::bearer_value))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.0.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_tuple("BearerToken").field(&shown).finish()
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// A coordinator's side, for one kind of call: who gets in.
#[derive(Clone, Debug)]
pub enum Gate {
    /// Everyone: only for a coordinator that listens on loopback and was given no token file
    /// of this kind (`serve` refuses that on any other address).
    Open,
    /// Callers with one of these tokens. No tokens: nobody.
    Tokens { kind: TokenKind, tokens: Vec<Token> },
}

impl Gate {
    /// Admits a call whose `authorization` header (`Bearer <token>`) carries a token this gate
    /// accepts; otherwise the refusal, as the `UNAUTHENTICATED` status the caller gets. The token
    /// sent is compared with every accepted token in constant time, and shown nowhere.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), tonic::Status> {
        let Gate::Tokens { kind, tokens } = self else {
            return Ok(());
        };
        let needs = format!("this call needs {}", kind.with_article());
        if tokens.is_empty() {
            return Err(tonic::Status::unauthenticated(format!(
                "{needs}, and this coordinator accepts none (start it with {})",
                kind.file_flag()
            )));
        }
        let Some(sent) = authorization else {
            return Err(tonic::Status::unauthenticated(format!(
                "{needs}: none was sent (give the client --token-file or {TOKEN_ENV})"
            )));
        };
        let Some(sent) = bearer(sent) else {
            return Err(tonic::Status::unauthenticated(format!(
                "{needs}: the authorization metadata is not `Bearer <token>`"
            )));
        };
        if !matches_any(sent, tokens) {
            return Err(tonic::Status::unauthenticated(format!(
                "{needs}: the token sent is not one of this coordinator's {} tokens",
                match kind {
                    TokenKind::Agent => "agent",
                    TokenKind::Status => "status",
                }
            )));
        }
        Ok(())
    }
}

/// The token in an `authorization` value `Bearer <token>` (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let (scheme, token) = value.split_at_checked(SCHEME.len())?;
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| token.trim_ascii())
}

/// Whether `sent` is one of `tokens`. Every token is compared, each in constant time, so the
/// time taken says nothing about how much of any token matched (only, at most, its length).
pub fn matches_any(sent: &[u8], tokens: &[Token]) -> bool {
    tokens
        .iter()
        .fold(subtle::Choice::from(0), |found, token| {
            found | token.0.as_bytes().ct_eq(sent)
        })
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;
    use tonic::service::Interceptor;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn tokens(list: &[&str]) -> Vec<Token> {
        list.iter().map(|t| Token::parse(t).unwrap()).collect()
    }

    #[test]
    fn token_files_have_one_token_a_line_with_comments_and_blank_lines() {
        let text = format!("# agents\n\n  {A}  \n{B} # added for rotation\n   # old one gone\n");
        let parsed = parse_tokens(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(matches_any(A.as_bytes(), &parsed));
        assert!(matches_any(B.as_bytes(), &parsed));
        assert!(parse_tokens("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn bad_lines_are_named_by_number_without_their_content() {
        let secret_but_short = "s3cr3t";
        let text = format!("{A}\n{secret_but_short}\n");
        assert_eq!(parse_tokens(&text).unwrap_err(), (2, TokenError::TooShort));
        let with_space = format!("{A} {B}");
        assert_eq!(
            parse_tokens(&with_space).unwrap_err(),
            (1, TokenError::BadCharacter)
        );
        assert_eq!(
            Token::parse(&"x".repeat(600)).unwrap_err(),
            TokenError::TooLong
        );
        // base64 and base64url are fine, padding only at the end.
        Token::parse("aGVsbG8gd29ybGQgaGVsbG8=").unwrap();
        Token::parse("aGVsbG8_d29ybGQ-aGVsbG8").unwrap();
        assert_eq!(
            Token::parse("aGVsbG8=d29ybGQgaGVsbG8").unwrap_err(),
            TokenError::BadCharacter
        );

        let dir = std::env::temp_dir().join(format!("crater-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, format!("{A}\n{secret_but_short}\n")).unwrap();
        let message = read_token_file(&file).unwrap_err().to_string();
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains(secret_but_short), "{message}");
        std::fs::write(&file, "# only a comment\n").unwrap();
        let message = read_token_file(&file).unwrap_err().to_string();
        assert!(message.contains("has no token"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_are_redacted_in_debug_output() {
        let token = Token::parse(A).unwrap();
        assert!(!format!("{token:?}").contains(A));
        assert!(!format!("{:?}", BearerToken::new(Some(&token))).contains(A));
        assert!(
            !format!(
                "{:?}",
                Gate::Tokens {
                    kind: TokenKind::Agent,
                    tokens: vec![token]
                }
            )
            .contains(A)
        );
    }

    #[test]
    fn constant_time_match_finds_exactly_the_accepted_tokens() {
        let accepted = tokens(&[A, B]);
        assert!(matches_any(A.as_bytes(), &accepted));
        assert!(matches_any(B.as_bytes(), &accepted));
        // One character off, a prefix, a longer string, nothing.
        let mut off = A.as_bytes().to_vec();
        off[31] = b'0';
        assert!(!matches_any(&off, &accepted));
        assert!(!matches_any(&A.as_bytes()[..31], &accepted));
        assert!(!matches_any(format!("{A}0").as_bytes(), &accepted));
        assert!(!matches_any(b"", &accepted));
        assert!(!matches_any(A.as_bytes(), &[]));
    }

    /// The `authorization` header a client with `token` sends.
    fn sent_by(token: Option<&str>) -> Option<Vec<u8>> {
        let token = token.map(|t| Token::parse(t).unwrap());
        let mut interceptor = BearerToken::new(token.as_ref());
        let request = interceptor.call(tonic::Request::new(())).unwrap();
        header(request.metadata())
    }

    fn header(metadata: &MetadataMap) -> Option<Vec<u8>> {
        metadata
            .get(AUTHORIZATION)
            .map(|value| value.as_bytes().to_vec())
    }

    #[test]
    fn gates_admit_their_own_tokens_and_say_which_kind_they_need() {
        let agents = Gate::Tokens {
            kind: TokenKind::Agent,
            tokens: tokens(&[A]),
        };
        let status = Gate::Tokens {
            kind: TokenKind::Status,
            tokens: tokens(&[B]),
        };
        agents.check(sent_by(Some(A)).as_deref()).unwrap();
        status.check(sent_by(Some(B)).as_deref()).unwrap();

        let refused = status.check(sent_by(Some(A)).as_deref()).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("a status token"), "{refused:?}");
        assert!(!refused.message().contains(A));
        let refused = agents.check(sent_by(Some(B)).as_deref()).unwrap_err();
        assert!(refused.message().contains("an agent token"), "{refused:?}");
        assert!(!refused.message().contains(B));
        let refused = agents.check(sent_by(None).as_deref()).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("none was sent"), "{refused:?}");

        // The scheme is case-insensitive; another scheme is refused.
        let mut metadata = MetadataMap::new();
        metadata.insert(AUTHORIZATION, format!("bearer {A}").parse().unwrap());
        agents.check(header(&metadata).as_deref()).unwrap();
        metadata.insert(AUTHORIZATION, format!("Basic {A}").parse().unwrap());
        assert!(agents.check(header(&metadata).as_deref()).is_err());

        // A kind with no tokens admits nobody; an open gate everybody.
        let closed = Gate::Tokens {
            kind: TokenKind::Status,
            tokens: Vec::new(),
        };
        let refused = closed.check(sent_by(Some(B)).as_deref()).unwrap_err();
        assert!(
            refused.message().contains("--status-token-file"),
            "{refused:?}"
        );
        Gate::Open.check(sent_by(None).as_deref()).unwrap();
    }
}
