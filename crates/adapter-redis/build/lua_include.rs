//! The step that composes the Lua scripts from their parts (used by
//! `build.rs`; its tests run with the library's). Two directives, each
//! alone on its line:
//!
//! * `-- @include NAME`: the text of `lua/include/NAME.lua` (helpers and
//!   constants), itself expanded the same way, the first time NAME is met
//!   in a script; later includes of the same NAME expand to nothing. So
//!   every helper is defined once per script, and a script carries only
//!   the helpers it (or one of its includes) asks for.
//! * `-- @inline NAME`: the text of `lua/inline/NAME.lua` (a statement
//!   snippet), in place, every time, indented like the directive. A
//!   snippet reads and assigns names the script declared; it declares no
//!   local of its own at its top level (it would leak into the script)
//!   and holds no directive (an include inside a block would scope its
//!   helper to that block).

use std::collections::BTreeSet;
use std::fmt;

/// The line prefix that marks an include.
pub const INCLUDE: &str = "-- @include ";
/// The line prefix that marks a snippet expanded in place.
pub const INLINE: &str = "-- @inline ";

/// Which part a directive names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `lua/include/NAME.lua`.
    Include,
    /// `lua/inline/NAME.lua`.
    Inline,
}

/// Why a script could not be composed; the build fails with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncludeError {
    /// `script` names `name`, and there is no such part.
    Missing {
        script: String,
        part: Part,
        name: String,
    },
    /// The snippet `name` breaks the snippet rules (see the module docs).
    BadSnippet { name: String, line: String },
    /// `script` names an include that is not a plain lower-case name.
    BadName { script: String, name: String },
    /// `script` includes `name` inside a block, where its helpers would
    /// be scoped to that block (and missing wherever it is met again).
    IndentedInclude { script: String, name: String },
    /// The includes of `script` include each other in a circle.
    Cycle { script: String, chain: Vec<String> },
}

impl fmt::Display for IncludeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IncludeError::Missing { script, part, name } => {
                let folder = match part {
                    Part::Include => "include",
                    Part::Inline => "inline",
                };
                write!(f, "lua/{script}: no lua/{folder}/{name}.lua")
            }
            IncludeError::BadSnippet { name, line } => write!(
                f,
                "lua/inline/{name}.lua: a snippet declares no top-level local and holds no directive: {line:?}"
            ),
            IncludeError::BadName { script, name } => {
                write!(f, "lua/{script}: include name {name:?} is not [a-z0-9_]+")
            }
            IncludeError::IndentedInclude { script, name } => write!(
                f,
                "lua/{script}: include {name} inside a block; includes go at the top level"
            ),
            IncludeError::Cycle { script, chain } => {
                write!(
                    f,
                    "lua/{script}: includes form a cycle: {}",
                    chain.join(" -> ")
                )
            }
        }
    }
}

impl std::error::Error for IncludeError {}

/// Where [`expand`] reads the parts: the text of a part, or `None` when
/// there is none.
pub type Parts<'a> = &'a dyn Fn(Part, &str) -> Option<String>;

/// Expands the directives of `text`, the script `script`.
///
/// # Errors
/// [`IncludeError`] for a missing part, a bad name, a cycle or a snippet
/// that breaks the snippet rules.
pub fn expand(script: &str, text: &str, include: Parts<'_>) -> Result<String, IncludeError> {
    let mut out = String::with_capacity(text.len() * 4);
    let mut done = BTreeSet::new();
    let mut chain = Vec::new();
    expand_into(script, text, include, &mut done, &mut chain, &mut out)?;
    Ok(out)
}

fn expand_into(
    script: &str,
    text: &str,
    include: Parts<'_>,
    done: &mut BTreeSet<String>,
    chain: &mut Vec<String>,
    out: &mut String,
) -> Result<(), IncludeError> {
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let directive = line.trim_start();
        let (part, name) = if let Some(name) = directive.strip_prefix(INCLUDE) {
            (Part::Include, name.trim())
        } else if let Some(name) = directive.strip_prefix(INLINE) {
            (Part::Inline, name.trim())
        } else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        check_name(script, name)?;
        if part == Part::Inline {
            let body = read(script, include, part, name)?;
            snippet(name, &body, indent, out)?;
            continue;
        }
        if !indent.is_empty() {
            return Err(IncludeError::IndentedInclude {
                script: script.to_owned(),
                name: name.to_owned(),
            });
        }
        if chain.iter().any(|c| c == name) {
            let mut circle = chain.clone();
            circle.push(name.to_owned());
            return Err(IncludeError::Cycle {
                script: script.to_owned(),
                chain: circle,
            });
        }
        if done.contains(name) {
            continue;
        }
        let body = read(script, include, part, name)?;
        chain.push(name.to_owned());
        expand_into(script, &body, include, done, chain, out)?;
        chain.pop();
        done.insert(name.to_owned());
    }
    Ok(())
}

fn check_name(script: &str, name: &str) -> Result<(), IncludeError> {
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    if name.is_empty() || !name.bytes().all(plain) {
        return Err(IncludeError::BadName {
            script: script.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn read(script: &str, include: Parts<'_>, part: Part, name: &str) -> Result<String, IncludeError> {
    include(part, name).ok_or_else(|| IncludeError::Missing {
        script: script.to_owned(),
        part,
        name: name.to_owned(),
    })
}

/// Appends the snippet `name` indented by `indent`, after checking the
/// snippet rules.
fn snippet(name: &str, body: &str, indent: &str, out: &mut String) -> Result<(), IncludeError> {
    for line in body.lines() {
        let trimmed = line.trim_start();
        if line.starts_with("local ") || trimmed.starts_with(INCLUDE) || trimmed.starts_with(INLINE)
        {
            return Err(IncludeError::BadSnippet {
                name: name.to_owned(),
                line: line.to_owned(),
            });
        }
        if !line.is_empty() {
            out.push_str(indent);
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn library(part: Part, name: &str) -> Option<String> {
        let text = match (part, name) {
            (Part::Include, "base") => "local MAX = 1\n",
            (Part::Include, "twice") => "-- @include base\nlocal function twice() end\n",
            (Part::Include, "ring_a") => "-- @include ring_b\n",
            (Part::Include, "ring_b") => "-- @include ring_a\n",
            (Part::Inline, "check") => "if x > MAX then\n  x = MAX\nend\n",
            (Part::Inline, "leaky") => "local y = x\n",
            (Part::Inline, "nested") => "-- @include base\n",
            _ => return None,
        };
        Some(text.to_owned())
    }

    #[test]
    fn an_include_line_becomes_the_include_text() {
        let got = expand("s.lua", "-- @include base\nreturn MAX\n", &library);
        assert_eq!(got, Ok("local MAX = 1\nreturn MAX\n".to_owned()));
    }

    #[test]
    fn an_include_met_again_expands_to_nothing() {
        let got = expand(
            "s.lua",
            "-- @include base\n-- @include twice\n-- @include base\nreturn 1\n",
            &library,
        );
        assert_eq!(
            got,
            Ok("local MAX = 1\nlocal function twice() end\nreturn 1\n".to_owned())
        );
    }

    #[test]
    fn a_missing_include_is_an_error_naming_script_and_include() {
        let got = expand("s.lua", "-- @include nowhere\n", &library);
        assert_eq!(
            got,
            Err(IncludeError::Missing {
                script: "s.lua".to_owned(),
                part: Part::Include,
                name: "nowhere".to_owned()
            })
        );
    }

    #[test]
    fn an_include_name_that_could_leave_the_folder_is_refused() {
        let got = expand("s.lua", "-- @include ../secret\n", &library);
        assert!(matches!(got, Err(IncludeError::BadName { .. })), "{got:?}");
    }

    #[test]
    fn includes_that_include_each_other_are_an_error() {
        let got = expand("s.lua", "-- @include ring_a\n", &library);
        assert!(matches!(got, Err(IncludeError::Cycle { .. })), "{got:?}");
    }

    #[test]
    fn a_snippet_is_expanded_in_place_every_time_with_the_directive_indent() {
        let got = expand(
            "s.lua",
            "-- @inline check\nif y then\n  -- @inline check\nend\n",
            &library,
        );
        assert_eq!(
            got,
            Ok("if x > MAX then\n  x = MAX\nend\nif y then\n  if x > MAX then\n    x = MAX\n  end\nend\n"
                .to_owned())
        );
    }

    #[test]
    fn an_include_inside_a_block_is_refused() {
        let got = expand("s.lua", "if x then\n  -- @include base\nend\n", &library);
        assert!(
            matches!(got, Err(IncludeError::IndentedInclude { .. })),
            "{got:?}"
        );
    }

    #[test]
    fn a_missing_snippet_is_an_error() {
        let got = expand("s.lua", "-- @inline nowhere\n", &library);
        assert!(
            matches!(
                got,
                Err(IncludeError::Missing {
                    part: Part::Inline,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn a_snippet_that_declares_a_local_is_refused() {
        let got = expand("s.lua", "-- @inline leaky\n", &library);
        assert!(
            matches!(got, Err(IncludeError::BadSnippet { .. })),
            "{got:?}"
        );
    }

    #[test]
    fn a_snippet_that_includes_is_refused() {
        let got = expand("s.lua", "-- @inline nested\n", &library);
        assert!(
            matches!(got, Err(IncludeError::BadSnippet { .. })),
            "{got:?}"
        );
    }
}
