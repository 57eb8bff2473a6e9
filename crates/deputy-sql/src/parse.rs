//! Parsing: the statements Deputy implements itself (catalog DDL, UC functions, row filters and masks, grants,
//! SHOW and DESCRIBE), recognised with the sqlparser `Parser` in the Databricks dialect, and everything else parsed
//! as a standard statement for DataFusion to plan.
//!
//! Deputy owns the DDL so that it writes through the catalog store with permission checks; DataFusion's own DDL
//! (`CREATE TABLE` into an in-memory catalog, `COPY`, `SET`) is never reached.

use std::borrow::Cow;

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Query, SelectItem, SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::DatabricksDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use deputy_authz::SecurableKind;

use crate::SqlError;

/// A possibly partial name as written, each part folded to lower case (Unity Catalog names are case-insensitive).
pub(crate) type Name = Vec<String>;

#[derive(Debug, Clone)]
pub(crate) struct ColumnDefinition {
    pub(crate) name: String,
    pub(crate) type_text: String,
    pub(crate) nullable: bool,
    pub(crate) comment: Option<String>,
}

/// A parameter of a function, or a column of a table function's result.
#[derive(Debug, Clone)]
pub(crate) struct FunctionParameter {
    pub(crate) name: String,
    pub(crate) type_text: String,
    pub(crate) comment: Option<String>,
}

/// What a function returns: one value, or rows of columns (`RETURNS TABLE (...)`).
#[derive(Debug, Clone)]
pub(crate) enum FunctionReturns {
    Scalar(String),
    Table(Vec<FunctionParameter>),
}

/// The file formats `COPY INTO` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Clone)]
pub(crate) enum DeputyStatement {
    CreateCatalog {
        name: String,
        if_not_exists: bool,
        comment: Option<String>,
    },
    CreateSchema {
        name: Name,
        if_not_exists: bool,
        comment: Option<String>,
    },
    CreateTable {
        name: Name,
        if_not_exists: bool,
        /// `CREATE OR REPLACE TABLE`: an existing table keeps its id, owner, grants and policies.
        or_replace: bool,
        columns: Vec<ColumnDefinition>,
        query: Option<Box<Query>>,
        comment: Option<String>,
    },
    CreateView {
        name: Name,
        if_not_exists: bool,
        query: Box<Query>,
        comment: Option<String>,
    },
    CreateFunction {
        name: Name,
        if_not_exists: bool,
        /// `CREATE OR REPLACE FUNCTION`: an existing function keeps its id, owner and grants.
        or_replace: bool,
        parameters: Vec<FunctionParameter>,
        returns: FunctionReturns,
        /// An expression for a scalar function, a query for a table function, as text.
        body: String,
        comment: Option<String>,
    },
    Drop {
        kind: SecurableKind,
        name: Name,
        if_exists: bool,
        cascade: bool,
    },
    ShowCatalogs,
    ShowSchemas {
        catalog: Option<String>,
    },
    ShowTables {
        schema: Option<Name>,
    },
    Describe {
        name: Name,
    },
    SetRowFilter {
        table: Name,
        function: Name,
        columns: Vec<String>,
    },
    DropRowFilter {
        table: Name,
    },
    SetMask {
        table: Name,
        column: String,
        function: Name,
        using: Vec<String>,
    },
    DropMask {
        table: Name,
        column: String,
    },
    Grant {
        privileges: Vec<String>,
        kind: SecurableKind,
        name: Name,
        principal: String,
    },
    Revoke {
        privileges: Vec<String>,
        kind: SecurableKind,
        name: Name,
        principal: String,
    },
    ShowGrants {
        principal: Option<String>,
        kind: SecurableKind,
        name: Name,
    },
    /// `COPY INTO <table> FROM '<path>' FILEFORMAT = <format> [FORMAT_OPTIONS ('<key>' = '<value>', ...)]`.
    CopyInto {
        table: Name,
        path: String,
        format: FileFormat,
        /// Keys lower case, as written otherwise.
        options: Vec<(String, String)>,
    },
    /// A query, `INSERT`, `EXPLAIN`, ...: planned by DataFusion.
    Standard(Box<Statement>),
}

/// Parses exactly one statement (an optional trailing `;` is allowed).
pub(crate) fn parse_statement(sql: &str) -> Result<DeputyStatement, SqlError> {
    let dialect = DatabricksDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    let statement = match deputy_statement(&mut parser).map_err(syntax)? {
        Some(statement) => statement,
        None => DeputyStatement::Standard(Box::new(parser.parse_statement().map_err(syntax)?)),
    };
    while parser.consume_token(&Token::SemiColon) {}
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(SqlError::Syntax(format!(
            "expected the end of the statement, found `{}`; run one statement at a time",
            next.token
        )));
    }
    Ok(statement)
}

/// Whether `sql` is exactly one query that only reads: a `SELECT`, `WITH` or `VALUES` without `SELECT ... INTO`.
/// APIs that run SQL written by a model (Genie) accept nothing else, so a question can never change data, whatever
/// the caller's privileges would allow.
pub fn is_read_only_query(sql: &str) -> Result<bool, SqlError> {
    Ok(match parse_statement(sql)? {
        DeputyStatement::Standard(statement) => match *statement {
            Statement::Query(query) => !selects_into(&query),
            _ => false,
        },
        _ => false,
    })
}

fn selects_into(query: &Query) -> bool {
    fn set_into(body: &SetExpr) -> bool {
        match body {
            SetExpr::Select(select) => select.into.is_some(),
            SetExpr::Query(query) => selects_into(query),
            SetExpr::SetOperation { left, right, .. } => set_into(left) || set_into(right),
            SetExpr::Values(_) | SetExpr::Table(_) => false,
            // INSERT, UPDATE, DELETE, MERGE as a query body write.
            _ => true,
        }
    }
    let in_ctes = query
        .with
        .as_ref()
        .is_some_and(|with| with.cte_tables.iter().any(|cte| selects_into(&cte.query)));
    in_ctes || set_into(&query.body)
}

fn syntax(error: ParserError) -> SqlError {
    SqlError::Syntax(error.to_string())
}

/// Consumes the given words (unquoted, case-insensitive) if they come next, all of them.
fn words(parser: &mut Parser<'_>, expected: &[&str]) -> bool {
    let matches = expected.iter().enumerate().all(|(index, word)| {
        matches!(parser.peek_nth_token(index).token,
            Token::Word(ref found) if found.quote_style.is_none() && found.value.eq_ignore_ascii_case(word))
    });
    if matches {
        for _ in expected {
            parser.next_token();
        }
    }
    matches
}

fn expect_words(parser: &mut Parser<'_>, expected: &[&str]) -> Result<(), ParserError> {
    if words(parser, expected) {
        Ok(())
    } else {
        Err(ParserError::ParserError(format!(
            "expected {}, found `{}`",
            expected.join(" "),
            parser.peek_token().token
        )))
    }
}

fn name(parser: &mut Parser<'_>) -> Result<Name, ParserError> {
    object_name(&parser.parse_object_name(false)?).map_err(ParserError::ParserError)
}

/// The name of a parsed object, folded as [`Name`]s are.
pub(crate) fn object_name(object: &ObjectName) -> Result<Name, String> {
    object
        .0
        .iter()
        .map(|part| {
            part.as_ident()
                .map(|ident| ident.value.to_ascii_lowercase())
                .ok_or_else(|| format!("invalid name `{object}`"))
        })
        .collect()
}

fn identifier(parser: &mut Parser<'_>) -> Result<String, ParserError> {
    Ok(parser.parse_identifier()?.value.to_ascii_lowercase())
}

/// A principal: an identifier, a back-quoted name (`alice@example.com`), or a string literal.
fn principal(parser: &mut Parser<'_>) -> Result<String, ParserError> {
    if let Token::SingleQuotedString(value) = parser.peek_token().token {
        parser.next_token();
        return Ok(value);
    }
    Ok(parser.parse_identifier()?.value)
}

fn if_not_exists(parser: &mut Parser<'_>) -> bool {
    words(parser, &["IF", "NOT", "EXISTS"])
}

fn comment(parser: &mut Parser<'_>) -> Result<Option<String>, ParserError> {
    if words(parser, &["COMMENT"]) {
        Ok(Some(parser.parse_literal_string()?))
    } else {
        Ok(None)
    }
}

fn column_list(parser: &mut Parser<'_>) -> Result<Vec<String>, ParserError> {
    parser.expect_token(&Token::LParen)?;
    if parser.consume_token(&Token::RParen) {
        return Ok(Vec::new());
    }
    let columns = parser.parse_comma_separated(identifier)?;
    parser.expect_token(&Token::RParen)?;
    Ok(columns)
}

fn securable_kind(parser: &mut Parser<'_>) -> Result<SecurableKind, ParserError> {
    let kinds: [(&str, SecurableKind); 7] = [
        ("CATALOG", SecurableKind::Catalog),
        ("SCHEMA", SecurableKind::Schema),
        ("DATABASE", SecurableKind::Schema),
        ("TABLE", SecurableKind::Table),
        ("VIEW", SecurableKind::View),
        ("FUNCTION", SecurableKind::Function),
        ("CONNECTION", SecurableKind::Connection),
    ];
    for (word, kind) in kinds {
        if words(parser, &[word]) {
            return Ok(kind);
        }
    }
    Err(ParserError::ParserError(format!(
        "expected CATALOG, SCHEMA, TABLE, VIEW, FUNCTION or CONNECTION, found `{}`",
        parser.peek_token().token
    )))
}

/// `Some` for the statements Deputy implements, `None` (with nothing consumed) for the rest.
fn deputy_statement(parser: &mut Parser<'_>) -> Result<Option<DeputyStatement>, ParserError> {
    if words(parser, &["CREATE"]) {
        return create(parser).map(Some);
    }
    if words(parser, &["DROP"]) {
        return drop(parser).map(Some);
    }
    if words(parser, &["SHOW"]) {
        return show(parser).map(Some);
    }
    if words(parser, &["DESCRIBE"]) || words(parser, &["DESC"]) {
        words(parser, &["TABLE"]);
        return Ok(Some(DeputyStatement::Describe {
            name: name(parser)?,
        }));
    }
    if words(parser, &["ALTER", "TABLE"]) {
        return alter_table(parser).map(Some);
    }
    if words(parser, &["COPY", "INTO"]) {
        return copy_into(parser).map(Some);
    }
    if words(parser, &["GRANT"]) {
        let (privileges, kind, name) = grant_target(parser)?;
        expect_words(parser, &["TO"])?;
        let principal = principal(parser)?;
        return Ok(Some(DeputyStatement::Grant {
            privileges,
            kind,
            name,
            principal,
        }));
    }
    if words(parser, &["REVOKE"]) {
        let (privileges, kind, name) = grant_target(parser)?;
        expect_words(parser, &["FROM"])?;
        let principal = principal(parser)?;
        return Ok(Some(DeputyStatement::Revoke {
            privileges,
            kind,
            name,
            principal,
        }));
    }
    Ok(None)
}

fn create(parser: &mut Parser<'_>) -> Result<DeputyStatement, ParserError> {
    if words(parser, &["OR", "REPLACE"]) {
        if words(parser, &["FUNCTION"]) {
            return create_function(parser, true);
        }
        if !words(parser, &["TABLE"]) {
            return Err(ParserError::ParserError(
                "CREATE OR REPLACE is supported for tables and functions only; drop the object first"
                    .to_owned(),
            ));
        }
        return create_table(parser, true);
    }
    if words(parser, &["CATALOG"]) {
        let if_not_exists = if_not_exists(parser);
        let name = identifier(parser)?;
        let comment = comment(parser)?;
        return Ok(DeputyStatement::CreateCatalog {
            name,
            if_not_exists,
            comment,
        });
    }
    if words(parser, &["SCHEMA"]) || words(parser, &["DATABASE"]) {
        let if_not_exists = if_not_exists(parser);
        let name = name(parser)?;
        let comment = comment(parser)?;
        return Ok(DeputyStatement::CreateSchema {
            name,
            if_not_exists,
            comment,
        });
    }
    if words(parser, &["TABLE"]) {
        return create_table(parser, false);
    }
    if words(parser, &["VIEW"]) {
        let if_not_exists = if_not_exists(parser);
        let name = name(parser)?;
        let comment = comment(parser)?;
        expect_words(parser, &["AS"])?;
        let query = parser.parse_query()?;
        return Ok(DeputyStatement::CreateView {
            name,
            if_not_exists,
            query,
            comment,
        });
    }
    if words(parser, &["FUNCTION"]) {
        return create_function(parser, false);
    }
    Err(ParserError::ParserError(format!(
        "expected CATALOG, SCHEMA, TABLE, VIEW or FUNCTION after CREATE, found `{}`",
        parser.peek_token().token
    )))
}

fn create_table(parser: &mut Parser<'_>, or_replace: bool) -> Result<DeputyStatement, ParserError> {
    let if_not_exists = if_not_exists(parser);
    if or_replace && if_not_exists {
        return Err(ParserError::ParserError(
            "CREATE OR REPLACE TABLE and IF NOT EXISTS cannot be combined".to_owned(),
        ));
    }
    let name = name(parser)?;
    let mut columns = Vec::new();
    if parser.consume_token(&Token::LParen) {
        columns = parser.parse_comma_separated(|parser| {
            let name = identifier(parser)?;
            let type_text = parser.parse_data_type()?.to_string();
            let nullable = !words(parser, &["NOT", "NULL"]);
            let comment = comment(parser)?;
            Ok(ColumnDefinition {
                name,
                type_text,
                nullable,
                comment,
            })
        })?;
        parser.expect_token(&Token::RParen)?;
    }
    if words(parser, &["USING"]) {
        let format = identifier(parser)?;
        if !matches!(format.as_str(), "parquet" | "delta") {
            return Err(ParserError::ParserError(format!(
                "tables are stored as PARQUET; `USING {format}` is not supported"
            )));
        }
    }
    let comment = comment(parser)?;
    let query = if words(parser, &["AS"]) {
        Some(parser.parse_query()?)
    } else {
        None
    };
    if query.is_some() != columns.is_empty() {
        return Err(ParserError::ParserError(
            "CREATE TABLE needs either a column list or AS <query>, not both".to_owned(),
        ));
    }
    Ok(DeputyStatement::CreateTable {
        name,
        if_not_exists,
        or_replace,
        columns,
        query,
        comment,
    })
}

fn copy_into(parser: &mut Parser<'_>) -> Result<DeputyStatement, ParserError> {
    let table = name(parser)?;
    expect_words(parser, &["FROM"])?;
    let path = parser.parse_literal_string()?;
    expect_words(parser, &["FILEFORMAT"])?;
    parser.expect_token(&Token::Eq)?;
    let format = match identifier(parser)?.as_str() {
        "csv" => FileFormat::Csv,
        "json" => FileFormat::Json,
        "parquet" => FileFormat::Parquet,
        other => {
            return Err(ParserError::ParserError(format!(
                "FILEFORMAT must be CSV, JSON or PARQUET, not `{other}`"
            )));
        }
    };
    let mut options = Vec::new();
    if words(parser, &["FORMAT_OPTIONS"]) {
        parser.expect_token(&Token::LParen)?;
        options = parser.parse_comma_separated(|parser| {
            let key = parser.parse_literal_string()?.to_ascii_lowercase();
            parser.expect_token(&Token::Eq)?;
            let value = parser.parse_literal_string()?;
            Ok((key, value))
        })?;
        parser.expect_token(&Token::RParen)?;
    }
    Ok(DeputyStatement::CopyInto {
        table,
        path,
        format,
        options,
    })
}

fn create_function(
    parser: &mut Parser<'_>,
    or_replace: bool,
) -> Result<DeputyStatement, ParserError> {
    let if_not_exists = if_not_exists(parser);
    let name = name(parser)?;
    let parameters = function_parameters(parser)?;
    expect_words(parser, &["RETURNS"])?;
    let returns = if words(parser, &["TABLE"]) {
        FunctionReturns::Table(function_parameters(parser)?)
    } else {
        FunctionReturns::Scalar(parser.parse_data_type()?.to_string())
    };
    // Characteristics Databricks accepts between the signature and the body; they change nothing here.
    let mut comment_text = None;
    loop {
        if words(parser, &["LANGUAGE", "SQL"])
            || words(parser, &["DETERMINISTIC"])
            || words(parser, &["NOT", "DETERMINISTIC"])
            || words(parser, &["CONTAINS", "SQL"])
            || words(parser, &["READS", "SQL", "DATA"])
            || words(parser, &["SQL", "SECURITY", "DEFINER"])
        {
            continue;
        }
        if let Some(text) = comment(parser)? {
            comment_text = Some(text);
            continue;
        }
        break;
    }
    expect_words(parser, &["RETURN"])?;
    let body = match returns {
        FunctionReturns::Scalar(_) => parser.parse_expr()?.to_string(),
        FunctionReturns::Table(_) => parser.parse_query()?.to_string(),
    };
    Ok(DeputyStatement::CreateFunction {
        name,
        if_not_exists,
        or_replace,
        parameters,
        returns,
        body,
        comment: comment_text,
    })
}

/// `(name TYPE [COMMENT '...'], ...)`, possibly empty.
fn function_parameters(parser: &mut Parser<'_>) -> Result<Vec<FunctionParameter>, ParserError> {
    parser.expect_token(&Token::LParen)?;
    if parser.consume_token(&Token::RParen) {
        return Ok(Vec::new());
    }
    let parameters = parser.parse_comma_separated(|parser| {
        let name = identifier(parser)?;
        let type_text = parser.parse_data_type()?.to_string();
        let comment = comment(parser)?;
        Ok(FunctionParameter {
            name,
            type_text,
            comment,
        })
    })?;
    parser.expect_token(&Token::RParen)?;
    Ok(parameters)
}

/// A stored scalar function body as the statement `SELECT <body>`, which resolves the tables it reads.
pub(crate) fn scalar_body(definition: &str) -> Result<Statement, SqlError> {
    single_statement(&format!("SELECT {definition}"))
}

/// The body expression of a statement made by [`scalar_body`].
pub(crate) fn body_expression(statement: Statement) -> Result<Expr, SqlError> {
    if let Statement::Query(query) = statement
        && let SetExpr::Select(select) = *query.body
        && let Ok([SelectItem::UnnamedExpr(expr)]) = <[SelectItem; 1]>::try_from(select.projection)
    {
        return Ok(expr);
    }
    Err(SqlError::Syntax(
        "a function body must be one expression".to_owned(),
    ))
}

/// A stored query (a view's definition, a table function's body) as one statement.
pub(crate) fn stored_query(sql: &str) -> Result<Statement, SqlError> {
    let statement = single_statement(sql)?;
    if !matches!(statement, Statement::Query(_)) {
        return Err(SqlError::Internal(format!("`{sql}` is not a query")));
    }
    Ok(statement)
}

fn single_statement(sql: &str) -> Result<Statement, SqlError> {
    let statements = Parser::parse_sql(&DatabricksDialect {}, sql).map_err(syntax)?;
    match <[Statement; 1]>::try_from(statements) {
        Ok([statement]) => Ok(statement),
        Err(_) => Err(SqlError::Syntax("expected exactly one statement".into())),
    }
}

/// Replaces each `IDENTIFIER(:parameter)` and `IDENTIFIER('name')` with the name it gives, as Databricks does for
/// object names taken from parameters (`SELECT IDENTIFIER(:function_name)(...)`). The name must be one to three
/// plain identifiers; it is written back quoted, so a parameter can never add SQL of its own.
pub(crate) fn identifier_clauses(
    sql: &str,
    parameter: impl Fn(&str) -> Option<String>,
) -> Result<Cow<'_, str>, SqlError> {
    if !sql.to_ascii_lowercase().contains("identifier") {
        return Ok(Cow::Borrowed(sql));
    }
    let dialect = DatabricksDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize()
        .map_err(|error| SqlError::Syntax(error.to_string()))?;
    let significant = |from: usize| {
        (from..tokens.len()).find(|index| !matches!(tokens[*index], Token::Whitespace(_)))
    };
    let mut out = String::with_capacity(sql.len());
    let mut index = 0;
    while index < tokens.len() {
        let clause = match &tokens[index] {
            Token::Word(word) if word.value.eq_ignore_ascii_case("IDENTIFIER") => {
                identifier_clause(&tokens, index, &significant)
            }
            _ => None,
        };
        let Some((value, end)) = clause else {
            out.push_str(&tokens[index].to_string());
            index += 1;
            continue;
        };
        let name = match value {
            ClauseValue::Parameter(key) => parameter(&key)
                .ok_or_else(|| SqlError::InvalidInput(format!("no value for parameter `{key}`")))?,
            ClauseValue::Name(name) => name,
        };
        out.push_str(&quoted_name(&name)?);
        index = end + 1;
    }
    Ok(Cow::Owned(out))
}

enum ClauseValue {
    Parameter(String),
    Name(String),
}

/// `IDENTIFIER ( :parameter )` or `IDENTIFIER ( 'name' )` starting at `start`: the value and the index of the
/// closing parenthesis.
fn identifier_clause(
    tokens: &[Token],
    start: usize,
    significant: &impl Fn(usize) -> Option<usize>,
) -> Option<(ClauseValue, usize)> {
    let open = significant(start + 1)?;
    if tokens[open] != Token::LParen {
        return None;
    }
    let first = significant(open + 1)?;
    let (value, last) = match &tokens[first] {
        Token::Placeholder(placeholder) => (
            ClauseValue::Parameter(placeholder.trim_start_matches([':', '$']).to_owned()),
            first,
        ),
        Token::SingleQuotedString(name) => (ClauseValue::Name(name.clone()), first),
        // The Databricks dialect reads `:name` as a colon and a word.
        Token::Colon => match tokens.get(first + 1) {
            Some(Token::Word(word)) => (ClauseValue::Parameter(word.value.clone()), first + 1),
            _ => return None,
        },
        _ => return None,
    };
    let close = significant(last + 1)?;
    (tokens[close] == Token::RParen).then_some((value, close))
}

fn quoted_name(name: &str) -> Result<String, SqlError> {
    let parts: Vec<&str> = name.split('.').collect();
    let plain = |part: &&str| {
        part.chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.len() > 3 || !parts.iter().all(plain) {
        return Err(SqlError::InvalidInput(format!(
            "`{name}` is not a name IDENTIFIER() accepts: one to three plain identifiers"
        )));
    }
    Ok(parts
        .iter()
        .map(|part| format!("`{part}`"))
        .collect::<Vec<_>>()
        .join("."))
}

fn drop(parser: &mut Parser<'_>) -> Result<DeputyStatement, ParserError> {
    let kind = securable_kind(parser)?;
    if kind == SecurableKind::Connection {
        return Err(ParserError::ParserError(
            "connections are dropped through the Unity Catalog API".to_owned(),
        ));
    }
    let if_exists = words(parser, &["IF", "EXISTS"]);
    let name = name(parser)?;
    let cascade = words(parser, &["CASCADE"]);
    if !cascade {
        words(parser, &["RESTRICT"]);
    }
    Ok(DeputyStatement::Drop {
        kind,
        name,
        if_exists,
        cascade,
    })
}

fn show(parser: &mut Parser<'_>) -> Result<DeputyStatement, ParserError> {
    if words(parser, &["CATALOGS"]) {
        return Ok(DeputyStatement::ShowCatalogs);
    }
    if words(parser, &["SCHEMAS"]) || words(parser, &["DATABASES"]) {
        let catalog = if words(parser, &["IN"]) || words(parser, &["FROM"]) {
            Some(identifier(parser)?)
        } else {
            None
        };
        return Ok(DeputyStatement::ShowSchemas { catalog });
    }
    if words(parser, &["TABLES"]) {
        let schema = if words(parser, &["IN"]) || words(parser, &["FROM"]) {
            Some(name(parser)?)
        } else {
            None
        };
        return Ok(DeputyStatement::ShowTables { schema });
    }
    if words(parser, &["GRANTS"]) || words(parser, &["GRANT"]) {
        let principal = if words(parser, &["ON"]) {
            None
        } else {
            let principal = principal(parser)?;
            expect_words(parser, &["ON"])?;
            Some(principal)
        };
        let kind = securable_kind(parser)?;
        let name = name(parser)?;
        return Ok(DeputyStatement::ShowGrants {
            principal,
            kind,
            name,
        });
    }
    Err(ParserError::ParserError(format!(
        "expected CATALOGS, SCHEMAS, TABLES or GRANTS after SHOW, found `{}`",
        parser.peek_token().token
    )))
}

fn alter_table(parser: &mut Parser<'_>) -> Result<DeputyStatement, ParserError> {
    let table = name(parser)?;
    if words(parser, &["SET", "ROW", "FILTER"]) {
        let function = name(parser)?;
        expect_words(parser, &["ON"])?;
        let columns = column_list(parser)?;
        return Ok(DeputyStatement::SetRowFilter {
            table,
            function,
            columns,
        });
    }
    if words(parser, &["DROP", "ROW", "FILTER"]) {
        return Ok(DeputyStatement::DropRowFilter { table });
    }
    if words(parser, &["ALTER", "COLUMN"]) || words(parser, &["CHANGE", "COLUMN"]) {
        let column = identifier(parser)?;
        if words(parser, &["SET", "MASK"]) {
            let function = name(parser)?;
            let using = if words(parser, &["USING", "COLUMNS"]) {
                column_list(parser)?
            } else {
                Vec::new()
            };
            return Ok(DeputyStatement::SetMask {
                table,
                column,
                function,
                using,
            });
        }
        if words(parser, &["DROP", "MASK"]) {
            return Ok(DeputyStatement::DropMask { table, column });
        }
    }
    Err(ParserError::ParserError(
        "ALTER TABLE supports SET ROW FILTER, DROP ROW FILTER, ALTER COLUMN ... SET MASK and DROP MASK"
            .to_owned(),
    ))
}

/// `<privilege>[, ...] ON <kind> <name>`; a privilege is one or more words (`USE CATALOG`, `ALL PRIVILEGES`).
fn grant_target(
    parser: &mut Parser<'_>,
) -> Result<(Vec<String>, SecurableKind, Name), ParserError> {
    let mut privileges = Vec::new();
    let mut current: Vec<String> = Vec::new();
    loop {
        let token = parser.next_token().token;
        match token {
            Token::Word(word) if word.value.eq_ignore_ascii_case("ON") => break,
            Token::Word(word) => current.push(word.value),
            Token::Comma if !current.is_empty() => {
                privileges.push(std::mem::take(&mut current).join(" "))
            }
            other => {
                return Err(ParserError::ParserError(format!(
                    "expected a privilege, found `{other}`"
                )));
            }
        }
    }
    if current.is_empty() {
        return Err(ParserError::ParserError(
            "expected a privilege before ON".to_owned(),
        ));
    }
    privileges.push(current.join(" "));
    let kind = securable_kind(parser)?;
    let name = name(parser)?;
    Ok((privileges, kind, name))
}

/// The tables (and views) a read-only query reads, as full `catalog.schema.table` names in lower case, partial names
/// resolved in the default catalog and schema as a session without defaults resolves them. Anything but exactly one
/// query (`SELECT`, `WITH`, `VALUES`) is refused, so a caller can hold a query to a list of tables before it runs.
/// Table functions count as tables, so a list of tables admits none of them.
pub fn query_tables(sql: &str) -> Result<Vec<String>, SqlError> {
    let dialect = DatabricksDialect {};
    let statements = Parser::parse_sql(&dialect, sql).map_err(syntax)?;
    let [statement] = statements.as_slice() else {
        return Err(SqlError::Unsupported(
            "give exactly one query; run one statement at a time".into(),
        ));
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(SqlError::Unsupported(
            "only a query (SELECT) is allowed here".into(),
        ));
    }
    let wrapped = datafusion::sql::parser::Statement::Statement(Box::new(statement.clone()));
    let (relations, _ctes) = datafusion::sql::resolve::resolve_table_references(&wrapped, true)?;
    let mut tables: Vec<String> = relations
        .into_iter()
        .map(|relation| {
            let (catalog, schema) = (
                relation
                    .catalog()
                    .unwrap_or(crate::session::DEFAULT_CATALOG),
                relation.schema().unwrap_or(crate::session::DEFAULT_SCHEMA),
            );
            format!("{catalog}.{schema}.{}", relation.table()).to_ascii_lowercase()
        })
        .collect();
    tables.sort();
    tables.dedup();
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_queries_are_read_only() {
        for sql in [
            "SELECT 1",
            "select region, sum(amount) from main.sales.orders group by region;",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1), (2)",
        ] {
            assert!(is_read_only_query(sql).unwrap(), "{sql}");
        }
        for sql in [
            "DROP TABLE main.sales.orders",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t",
            "UPDATE t SET x = 1",
            "SELECT * INTO copy FROM t",
            "WITH c AS (SELECT * INTO copy FROM t) SELECT 1",
            "CREATE TABLE t AS SELECT 1 AS x",
            "GRANT SELECT ON TABLE t TO `bob`",
            "ALTER TABLE t DROP ROW FILTER",
        ] {
            assert!(!is_read_only_query(sql).unwrap(), "{sql}");
        }
        assert!(is_read_only_query("SELECT 1; DROP TABLE t").is_err());
    }

    #[test]
    fn parses_deputy_statements() {
        let cases = [
            "CREATE CATALOG IF NOT EXISTS main COMMENT 'x'",
            "create schema main.sales",
            "CREATE TABLE main.s.t (id INT NOT NULL, name STRING COMMENT 'n')",
            "CREATE TABLE t AS SELECT 1 AS x",
            "CREATE OR REPLACE TABLE main.s.t (id INT)",
            "CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS x",
            "CREATE FUNCTION main.s.f(x INT, y STRING) RETURNS BOOLEAN RETURN x > 1 AND y = 'a'",
            "ALTER TABLE t SET ROW FILTER main.s.f ON (id, name)",
            "ALTER TABLE t DROP ROW FILTER",
            "ALTER TABLE t ALTER COLUMN email SET MASK m USING COLUMNS (id)",
            "ALTER TABLE t ALTER COLUMN email DROP MASK",
            "GRANT USE CATALOG, SELECT ON CATALOG main TO `alice@example.com`",
            "REVOKE ALL PRIVILEGES ON TABLE main.s.t FROM analysts",
            "SHOW GRANTS `bob` ON SCHEMA main.s",
            "SHOW GRANTS ON TABLE t",
            "SHOW TABLES IN main.s;",
            "DROP SCHEMA IF EXISTS main.s CASCADE",
            "DESCRIBE TABLE t",
            "COPY INTO main.s.t FROM '/data/x.csv' FILEFORMAT = CSV FORMAT_OPTIONS ('header' = 'true', 'sep' = ';')",
            "copy into t from '/data/' fileformat = parquet",
        ];
        for sql in cases {
            let parsed = parse_statement(sql);
            assert!(
                matches!(parsed, Ok(ref statement) if !matches!(statement, DeputyStatement::Standard(_))),
                "{sql}: {parsed:?}"
            );
        }
        assert!(matches!(
            parse_statement("SELECT 1; SELECT 2"),
            Err(SqlError::Syntax(_))
        ));
        assert!(matches!(
            parse_statement("SELECT * FROM t WHERE x = :p"),
            Ok(DeputyStatement::Standard(_))
        ));
    }

    #[test]
    fn identifier_clauses_take_plain_names_from_parameters_only() {
        let value = |name: &str| match name {
            "function_name" => Some("main.s.f".to_owned()),
            "evil" => Some("main.s.f(1); DROP TABLE t; --".to_owned()),
            _ => None,
        };
        assert_eq!(
            identifier_clauses("SELECT IDENTIFIER(:function_name)(:a, 2)", value).unwrap(),
            "SELECT `main`.`s`.`f`(:a, 2)"
        );
        assert_eq!(
            identifier_clauses("select identifier ( 'main.s.t' ).x FROM t", value).unwrap(),
            "select `main`.`s`.`t`.x FROM t"
        );
        assert!(matches!(
            identifier_clauses("SELECT 'identifier' AS x", value),
            Ok(Cow::Owned(text)) if text == "SELECT 'identifier' AS x"
        ));
        for refused in [
            "SELECT IDENTIFIER(:evil)()",
            "SELECT IDENTIFIER(:missing)()",
            "SELECT IDENTIFIER('a.b.c.d')()",
            "SELECT IDENTIFIER('a b')()",
        ] {
            assert!(identifier_clauses(refused, value).is_err(), "{refused}");
        }
    }

    #[test]
    fn create_function_reads_table_functions_and_replacements() {
        let parsed = parse_statement(
            "CREATE OR REPLACE FUNCTION main.s.f(r STRING COMMENT 'region') \
             RETURNS TABLE (id INT, email STRING) READS SQL DATA SQL SECURITY DEFINER \
             RETURN SELECT id, email FROM main.s.t WHERE region = r",
        )
        .unwrap();
        let DeputyStatement::CreateFunction {
            or_replace,
            parameters,
            returns: FunctionReturns::Table(columns),
            body,
            ..
        } = parsed
        else {
            panic!("not a table function: {parsed:?}");
        };
        assert!(or_replace);
        assert_eq!(parameters[0].comment.as_deref(), Some("region"));
        assert_eq!(columns.len(), 2);
        assert_eq!(body, "SELECT id, email FROM main.s.t WHERE region = r");
    }

    #[test]
    fn query_tables_names_every_table_a_query_reads_and_refuses_other_statements() {
        assert_eq!(
            query_tables(
                "WITH recent AS (SELECT * FROM main.sales.orders) SELECT * FROM recent JOIN S.Customers c ON true \
                 WHERE c.id IN (SELECT id FROM vip)"
            )
            .unwrap(),
            ["main.default.vip", "main.s.customers", "main.sales.orders"]
        );
        assert!(query_tables("SELECT 1").unwrap().is_empty());
        assert_eq!(
            query_tables("SELECT * FROM range(10)").unwrap(),
            ["main.default.range"]
        );
        for refused in [
            "DELETE FROM main.sales.orders",
            "DROP TABLE main.sales.orders",
            "SELECT 1; SELECT 2",
            "INSERT INTO t SELECT * FROM main.sales.orders",
        ] {
            assert!(query_tables(refused).is_err(), "{refused}");
        }
    }
}
